//! The fallback layer through its public API.

use std::sync::{Arc, Mutex};

use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::HttpClassifier;
use palisade::error::{BoxError, ErrorKind};
use palisade::event::Event;
use palisade::fallback::{Failed, FallbackLayer, from_fn, from_service, from_sync_fn};
use tower::{Layer, ServiceExt, service_fn};

type Res = http::Response<&'static str>;

fn status(
    code: u16,
) -> impl tower::Service<http::Request<()>, Response = Res, Error = BoxError> + Clone {
    service_fn(move |_: http::Request<()>| async move {
        Ok::<_, BoxError>(
            http::Response::builder()
                .status(code)
                .body("origin")
                .unwrap(),
        )
    })
}

fn get() -> http::Request<()> {
    http::Request::get("/item/7").body(()).unwrap()
}

#[tokio::test]
async fn a_classified_failure_is_answered_and_a_success_passes() {
    let layer = FallbackLayer::builder(from_sync_fn(|failed: Failed<http::Request<()>, Res>| {
        let res = failed.outcome?;
        assert_eq!(res.status(), 503, "the failed response is handed over");
        Ok(http::Response::new("fallback"))
    }))
    .classifier(HttpClassifier::new())
    .build()
    .unwrap();
    assert_eq!(
        *layer
            .layer(status(503))
            .oneshot(get())
            .await
            .unwrap()
            .body(),
        "fallback"
    );
    assert_eq!(
        *layer
            .layer(status(404))
            .oneshot(get())
            .await
            .unwrap()
            .body(),
        "origin"
    );
    assert_eq!(
        *layer
            .layer(status(200))
            .oneshot(get())
            .await
            .unwrap()
            .body(),
        "origin"
    );
}

#[tokio::test]
async fn only_chosen_kinds_fall_back() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let layer = FallbackLayer::builder(from_fn(|failed: Failed<u32, u32>| async move {
        assert_eq!(failed.error_kind(), Some(ErrorKind::CircuitOpen));
        Ok(0)
    }))
    .only_on([ErrorKind::CircuitOpen])
    .build()
    .unwrap();
    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("boom".into()) });
    let svc = layer.layer(breaker.layer(failing));
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "boom", "an inner error passes through");
    breaker.handle().force_open();
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
}

#[tokio::test]
async fn a_service_handler_gets_the_error_and_the_kept_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = service_fn(move |failed: Failed<u32, String>| {
        let log = log.clone();
        async move {
            let req = failed.request.expect("kept");
            let err = failed.outcome.unwrap_err().to_string();
            log.lock().unwrap().push(format!("{req}: {err}"));
            Ok::<_, BoxError>(format!("default for {req}"))
        }
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let elog = events.clone();
    let layer = FallbackLayer::builder(from_service(handler))
        .keep_request()
        .name("fb")
        .on_event(move |e: &Event<'_>| elog.lock().unwrap().push(e.to_string()))
        .build()
        .unwrap();
    let failing =
        service_fn(|n: u32| async move { Err::<String, BoxError>(format!("no {n}").into()) });
    assert_eq!(
        layer.layer(failing).oneshot(7).await.unwrap(),
        "default for 7"
    );
    assert_eq!(*seen.lock().unwrap(), ["7: no 7"]);
    assert_eq!(
        *events.lock().unwrap(),
        ["fallback `fb`: answered a failure (Inner)"]
    );
}

#[test]
fn an_empty_kind_list_is_refused() {
    let err = FallbackLayer::builder(from_sync_fn(|_: Failed<(), ()>| Ok::<(), BoxError>(())))
        .only_on([])
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "only_on");
}
