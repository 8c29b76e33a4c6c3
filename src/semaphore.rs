//! The semaphore behind every concurrency limit (the bulkhead; the
//! adaptive limit): a counting semaphore whose uncontended acquire and
//! release are one compare-and-swap each, with a bounded FIFO queue, a
//! maximum wait in it, and a limit that can be moved while calls run.
//!
//! tokio's `Semaphore` takes its waiter-list mutex on every release, even
//! when nobody waits; a bulkhead's free path must not take a lock. Here the
//! permits and the number of queued waiters share one atomic word: a release
//! that sees no waiter just adds a permit; only a release that sees one
//! takes the queue lock and hands its permit to the oldest waiter directly,
//! so a newcomer can never overtake the queue.
//!
//! The available count is signed: lowering the limit below the permits out
//! leaves it negative, a debt that releases pay before anyone is admitted
//! again. No call in flight is cut off by a lower limit.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::sync::atomic::Ordering::*;

use tokio::time::Sleep;

use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicU64, CachePadded, Mutex, MutexGuard};

/// A queued caller's handle on its place.
pub(crate) type WaiterRef = Arc<Waiter>;

/// Available permits (signed: negative is a debt) in the low half, queued
/// waiters in the high half. Every change computes both halves, so a carry
/// never crosses from one to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(available: i32, waiters: u32) -> Self {
        Self(u64::from(waiters) << 32 | u64::from(available as u32))
    }

    fn available(self) -> i32 {
        self.0 as u32 as i32
    }

    fn waiters(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// No waiter and no debt (the count's sign bit clear): one compare.
    #[inline]
    fn is_plain(self) -> bool {
        self.0 < 1 << 31
    }

    /// No waiter and a permit to take.
    #[inline]
    fn is_free(self) -> bool {
        self.0.wrapping_sub(1) < (1 << 31) - 1
    }
}

/// One queued caller.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    /// Set, under the queue lock, when a release handed this waiter its
    /// permit.
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Acquire)
    }

    /// Remembers whom to wake when the permit comes.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// What an attempt to get a permit came to.
#[derive(Debug)]
pub(crate) enum Acquire {
    /// A permit: the caller must release it.
    Permit,
    /// Queued: wait until the waiter is granted.
    Queued(Arc<Waiter>),
    /// No permit and no room in the queue.
    Full,
}

#[derive(Debug)]
pub(crate) struct Semaphore {
    /// Every acquire and release writes it: a line of its own.
    word: CachePadded<AtomicU64>,
    /// The permits there are when none is out.
    limit: AtomicU32,
    max_queue: u32,
    /// How long a queued caller waits before it is refused.
    max_wait: Option<Duration>,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

impl Semaphore {
    /// The largest limit: the available count is an `i32`.
    pub(crate) const MAX_PERMITS: u32 = 1 << 30;

    pub(crate) fn new(permits: u32, max_queue: u32, max_wait: Option<Duration>) -> Self {
        debug_assert!(permits <= Self::MAX_PERMITS && max_queue <= Self::MAX_PERMITS);
        Self {
            word: CachePadded(AtomicU64::new(Word::new(permits as i32, 0).0)),
            limit: AtomicU32::new(permits),
            max_queue,
            max_wait,
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a permit if one is free and nobody queues for it. Lock-free.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut word = Word(self.word.load(Relaxed));
        while word.is_free() {
            // No waiter and a positive count: taking one borrows nothing
            // from the waiters' half.
            match self
                .word
                .compare_exchange_weak(word.0, word.0 - 1, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => word = Word(actual),
            }
        }
        false
    }

    /// Takes a permit, or a place in the queue, or neither.
    pub(crate) fn acquire(&self) -> Acquire {
        if self.try_acquire() {
            return Acquire::Permit;
        }
        let mut queue = self.lock();
        // Joining the queue and the count of waiters change together, under
        // the lock, so that a release either sees this waiter or left a
        // permit this loop takes.
        let mut word = Word(self.word.load(Relaxed));
        loop {
            let (next, permit) = if word.waiters() == 0 && word.available() > 0 {
                (Word::new(word.available() - 1, 0), true)
            } else if word.waiters() < self.max_queue {
                (Word::new(word.available(), word.waiters() + 1), false)
            } else {
                return Acquire::Full;
            };
            match self
                .word
                .compare_exchange_weak(word.0, next.0, AcqRel, Relaxed)
            {
                Ok(_) if permit => return Acquire::Permit,
                Ok(_) => break,
                Err(actual) => word = Word(actual),
            }
        }
        let waiter = Arc::new(Waiter::default());
        queue.push_back(waiter.clone());
        Acquire::Queued(waiter)
    }

    /// Gives a permit back: to a debt if the limit was lowered below the
    /// permits out, else to the oldest waiter if there is one.
    #[inline]
    pub(crate) fn release(&self) {
        let mut word = Word(self.word.load(Relaxed));
        while word.is_plain() {
            // No waiter and no debt: adding one carries nothing into the
            // waiters' half.
            match self
                .word
                .compare_exchange_weak(word.0, word.0 + 1, Release, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = Word(actual),
            }
        }
        self.release_slow(word);
    }

    /// A release that finds a debt or a waiter.
    #[cold]
    fn release_slow(&self, mut word: Word) {
        while word.waiters() == 0 || word.available() < 0 {
            let next = Word::new(word.available() + 1, word.waiters());
            match self
                .word
                .compare_exchange_weak(word.0, next.0, Release, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = Word(actual),
            }
        }
        self.hand_over();
    }

    #[cold]
    fn hand_over(&self) {
        let mut queue = self.lock();
        match queue.pop_front() {
            Some(waiter) => {
                self.update(|w| Word::new(w.available(), w.waiters() - 1));
                waiter.granted.store(true, Release);
                let waker = waiter
                    .waker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                drop(queue);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            None => {
                // The waiters counted a moment ago have left.
                self.update(|w| Word::new(w.available() + 1, w.waiters()));
            }
        }
    }

    /// Applies `change` to the word, whatever else changes it meanwhile.
    fn update(&self, change: impl Fn(Word) -> Word) {
        let mut word = Word(self.word.load(Relaxed));
        loop {
            match self
                .word
                .compare_exchange_weak(word.0, change(word).0, AcqRel, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = Word(actual),
            }
        }
    }

    /// Withdraws a waiter that gives up (its wait expired, or it was
    /// dropped). If a permit reached it first, that permit is passed on.
    pub(crate) fn cancel(&self, waiter: &Arc<Waiter>) {
        let mut queue = self.lock();
        if let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(at);
            self.update(|w| Word::new(w.available(), w.waiters() - 1));
            return;
        }
        drop(queue);
        if waiter.is_granted() {
            self.release();
        }
    }

    /// Moves the limit to `permits` (at most [`MAX_PERMITS`](Self::MAX_PERMITS)).
    /// A higher limit admits queued callers at once; a lower one admits
    /// nobody until enough calls in flight have finished.
    pub(crate) fn set_limit(&self, permits: u32) {
        debug_assert!(permits <= Self::MAX_PERMITS);
        // Each change applies its own difference, so racing changes add up
        // to the last one's limit.
        let old = self.limit.swap(permits, AcqRel);
        if permits >= old {
            self.add_permits(permits - old);
        } else {
            let cut = (old - permits) as i32;
            self.update(|w| Word::new(w.available() - cut, w.waiters()));
        }
    }

    /// Adds `n` permits as `n` releases would, without a loop of `n`:
    /// a debt is paid first, then each queued caller gets one, in order,
    /// and the rest are added at once.
    fn add_permits(&self, mut n: u32) {
        let mut word = Word(self.word.load(Relaxed));
        while n > 0 {
            if word.waiters() > 0 && word.available() >= 0 {
                // A queued caller: hand one over (which may find it gone and
                // add the permit instead), then look again.
                self.hand_over();
                n -= 1;
                word = Word(self.word.load(Relaxed));
                continue;
            }
            // No one waits, or a debt comes first: add what may be added
            // at once (all of it, or just the debt when someone waits).
            let add = if word.waiters() == 0 {
                n
            } else {
                n.min(word.available().unsigned_abs())
            };
            let next = Word::new(word.available() + add as i32, word.waiters());
            match self
                .word
                .compare_exchange_weak(word.0, next.0, AcqRel, Relaxed)
            {
                Ok(_) => {
                    n -= add;
                    word = next;
                }
                Err(actual) => word = Word(actual),
            }
        }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Acquire)
    }

    /// Permits in use: above the limit for a while after it was lowered.
    pub(crate) fn in_use(&self) -> u32 {
        let available = Word(self.word.load(Acquire)).available();
        (i64::from(self.limit()) - i64::from(available)).max(0) as u32
    }

    /// Callers in the queue.
    pub(crate) fn queued(&self) -> u32 {
        Word(self.word.load(Acquire)).waiters()
    }
}

/// What one caller's [`Ticket`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The caller holds a permit now, taken at once or after waiting its
    /// turn.
    Permit,
    /// The caller already held a permit from an earlier poll.
    Held,
    /// Every permit and queue place was taken.
    Full,
    /// The caller waited in the queue for the maximum wait.
    TimedOut,
}

/// One caller's way to a permit: nothing yet, a permit, a place in the
/// queue (with its maximum wait's timer), or a refusal. Dropping a ticket
/// that holds a permit or a place does not give it back: its owner calls
/// [`Ticket::give_back`] (it holds the semaphore; the ticket does not).
#[derive(Debug, Default)]
pub(crate) enum Ticket {
    #[default]
    Idle,
    /// Holds a permit.
    Held,
    Queued {
        waiter: WaiterRef,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    /// Refused: at once (`timed_out: false`), or after the maximum wait.
    Refused { timed_out: bool },
}

impl Ticket {
    /// Moves towards a permit. `Ready` once the ticket holds one or was
    /// refused; a refusal is decided again at the next call, since a place
    /// may have come free. The lock-free attempt comes first.
    #[inline]
    pub(crate) fn poll_acquire(
        &mut self,
        sem: &Semaphore,
        cx: &mut Context<'_>,
    ) -> Poll<Admission> {
        if matches!(self, Ticket::Refused { .. }) {
            *self = Ticket::Idle;
        }
        if matches!(self, Ticket::Idle) && sem.try_acquire() {
            *self = Ticket::Held;
            return Poll::Ready(Admission::Permit);
        }
        self.poll_slow(sem, cx)
    }

    fn poll_slow(&mut self, sem: &Semaphore, cx: &mut Context<'_>) -> Poll<Admission> {
        loop {
            match self {
                Ticket::Held => return Poll::Ready(Admission::Held),
                Ticket::Refused { timed_out: false } => return Poll::Ready(Admission::Full),
                Ticket::Refused { timed_out: true } => return Poll::Ready(Admission::TimedOut),
                Ticket::Idle => match sem.acquire() {
                    Acquire::Permit => {
                        *self = Ticket::Held;
                        return Poll::Ready(Admission::Permit);
                    }
                    Acquire::Full => {
                        *self = Ticket::Refused { timed_out: false };
                        return Poll::Ready(Admission::Full);
                    }
                    Acquire::Queued(waiter) => {
                        let deadline = sem.max_wait.map(|w| Box::pin(tokio::time::sleep(w)));
                        *self = Ticket::Queued { waiter, deadline };
                    }
                },
                Ticket::Queued { waiter, deadline } => {
                    waiter.register(cx.waker());
                    if waiter.is_granted() {
                        // The permit is ours now; it must not be cancelled.
                        *self = Ticket::Held;
                        return Poll::Ready(Admission::Permit);
                    }
                    let expired = deadline
                        .as_mut()
                        .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                    if !expired {
                        return Poll::Pending;
                    }
                    let Ticket::Queued { waiter, .. } =
                        std::mem::replace(self, Ticket::Refused { timed_out: true })
                    else {
                        unreachable!("matched above")
                    };
                    // Gives the place up, or passes on a permit that came
                    // just now: a timed-out caller is refused either way.
                    sem.cancel(&waiter);
                    return Poll::Ready(Admission::TimedOut);
                }
            }
        }
    }

    /// Takes the permit out of the ticket (which is idle after); `false`
    /// if it held none.
    #[inline]
    pub(crate) fn take_permit(&mut self) -> bool {
        if matches!(self, Ticket::Held) {
            *self = Ticket::Idle;
            true
        } else {
            false
        }
    }

    /// Whether the ticket holds a permit.
    #[cfg(all(test, palisade_loom))]
    pub(crate) fn is_held(&self) -> bool {
        matches!(self, Ticket::Held)
    }

    /// Whether the last attempt was refused.
    #[inline]
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, Ticket::Refused { .. })
    }

    /// Whether the last attempt was refused after the maximum wait in the
    /// queue (`Some(true)`), at once (`Some(false)`), or not at all.
    #[inline]
    pub(crate) fn refused_after_wait(&self) -> Option<bool> {
        match self {
            Ticket::Refused { timed_out } => Some(*timed_out),
            _ => None,
        }
    }

    /// Gives back what the ticket holds: a permit, or a queue place.
    /// Returns whether it gave a permit back.
    #[inline]
    pub(crate) fn give_back(&mut self, sem: &Semaphore) -> bool {
        // The common case: a clone dropped with nothing reserved.
        if matches!(self, Ticket::Idle) {
            return false;
        }
        self.give_back_slow(sem)
    }

    #[cold]
    fn give_back_slow(&mut self, sem: &Semaphore) -> bool {
        match std::mem::take(self) {
            Ticket::Held => {
                sem.release();
                true
            }
            Ticket::Queued { waiter, .. } => {
                sem.cancel(&waiter);
                false
            }
            Ticket::Idle | Ticket::Refused { .. } => false,
        }
    }
}

/// A caller in the tests: takes a permit, or a place in the queue and
/// spins until its turn comes, or, with `give_up`, gives the place back.
/// Returns whether it holds a permit (which it must release).
#[cfg(test)]
fn take_or_give_up(s: &Semaphore, give_up: bool) -> bool {
    match s.acquire() {
        Acquire::Permit => true,
        Acquire::Queued(w) if give_up => {
            s.cancel(&w);
            false
        }
        Acquire::Queued(w) => {
            while !w.is_granted() {
                crate::sync::yield_now();
            }
            true
        }
        Acquire::Full => false,
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;

    /// Two callers race for one permit with a queue; one of them may give
    /// up its place. Whatever the interleaving, every permit comes back and
    /// the queue empties.
    #[test]
    fn loom_no_permit_is_lost() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 2, None));
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let s = s.clone();
                    loom::thread::spawn(move || {
                        if take_or_give_up(&s, i == 0) {
                            s.release();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!((s.in_use(), s.queued()), (0, 0));
        });
    }

    /// A release racing a newcomer: the release goes to the queued caller,
    /// never to the newcomer, whatever the interleaving.
    #[test]
    fn loom_queued_callers_are_served() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 1, None));
            assert!(s.try_acquire());
            let Acquire::Queued(w) = s.acquire() else {
                panic!("the permit is taken: the caller queues")
            };
            let releaser = {
                let s = s.clone();
                loom::thread::spawn(move || s.release())
            };
            let newcomer = {
                let s = s.clone();
                loom::thread::spawn(move || s.try_acquire())
            };
            releaser.join().unwrap();
            let overtook = newcomer.join().unwrap();
            assert!(!overtook, "a newcomer took the permit from the queue");
            assert!(w.is_granted());
            s.release();
            assert_eq!((s.in_use(), s.queued()), (0, 0));
        });
    }

    /// A release landing between a caller's lock-free attempt and its
    /// taking the queue's lock: the caller, under the lock, finds the freed
    /// permit and takes it, or queues and is handed it. Either way it holds
    /// the permit once the release is done, and nothing is left over.
    #[test]
    fn loom_a_release_racing_the_queue_lock_reaches_the_caller() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 1, None));
            assert!(s.try_acquire());
            let releaser = {
                let s = s.clone();
                loom::thread::spawn(move || s.release())
            };
            let caller = s.acquire();
            releaser.join().unwrap();
            match caller {
                Acquire::Permit => {}
                Acquire::Queued(w) => assert!(w.is_granted(), "queued beside a free permit"),
                Acquire::Full => panic!("a queue place was free"),
            }
            assert_eq!((s.in_use(), s.queued()), (1, 0));
            s.release();
            assert_eq!((s.in_use(), s.queued()), (0, 0));
        });
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_limit_tests {
    use super::*;

    /// The limit lowered from 2 to 1 while one of two holders releases
    /// and a caller waits in the queue: a release that comes after the
    /// lowering pays the debt and does not admit the caller, whatever the
    /// interleaving; and nothing is left over.
    #[test]
    fn loom_a_lowered_limit_admits_nobody_over_it() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(2, 1, None));
            assert!(s.try_acquire());
            assert!(s.try_acquire());
            let Acquire::Queued(waiter) = s.acquire() else {
                panic!("both permits are out: the caller queues")
            };
            let lowered = Arc::new(AtomicBool::new(false));
            let lowerer = {
                let (s, lowered) = (s.clone(), lowered.clone());
                loom::thread::spawn(move || {
                    s.set_limit(1);
                    lowered.store(true, Release);
                })
            };
            let releaser = {
                let (s, lowered, waiter) = (s.clone(), lowered.clone(), waiter.clone());
                loom::thread::spawn(move || {
                    let after_lowering = lowered.load(Acquire);
                    s.release();
                    assert!(
                        !(after_lowering && waiter.is_granted()),
                        "a release after the lowering admitted a caller over the limit"
                    );
                })
            };
            lowerer.join().unwrap();
            releaser.join().unwrap();
            if waiter.is_granted() {
                // The release came first: the caller holds the permit it
                // was handed, and the lowering left a debt of one.
                assert_eq!(s.in_use(), 2);
                s.release();
            } else {
                s.cancel(&waiter);
            }
            s.release();
            assert_eq!((s.in_use(), s.queued()), (0, 0));
            assert!(s.try_acquire(), "the permit of the new limit is free");
            assert!(!s.try_acquire(), "and only that one");
        });
    }

    /// The limit raised while a caller waits in the queue: the new permit
    /// goes to it.
    #[test]
    fn loom_a_raised_limit_serves_the_queue() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 1, None));
            assert!(s.try_acquire());
            let raiser = {
                let s = s.clone();
                loom::thread::spawn(move || s.set_limit(2))
            };
            let caller = s.acquire();
            raiser.join().unwrap();
            match &caller {
                Acquire::Permit => {}
                Acquire::Queued(w) => assert!(w.is_granted(), "queued beside a new permit"),
                Acquire::Full => panic!("a queue place was free"),
            }
            assert_eq!((s.in_use(), s.queued()), (2, 0));
        });
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn granted(a: &Acquire) -> Option<&Arc<Waiter>> {
        match a {
            Acquire::Queued(w) => Some(w),
            _ => None,
        }
    }

    #[test]
    fn permits_then_queue_then_full() {
        let s = Semaphore::new(2, 2, None);
        assert!(matches!(s.acquire(), Acquire::Permit));
        assert!(matches!(s.acquire(), Acquire::Permit));
        let a = s.acquire();
        let b = s.acquire();
        assert!(matches!(s.acquire(), Acquire::Full));
        assert_eq!((s.in_use(), s.queued()), (2, 2));
        // Releases go to the queue in order, never to a newcomer.
        s.release();
        assert!(granted(&a).unwrap().is_granted());
        assert!(!granted(&b).unwrap().is_granted());
        assert!(!s.try_acquire(), "a newcomer may not overtake the queue");
        s.release();
        assert!(granted(&b).unwrap().is_granted());
        assert_eq!((s.in_use(), s.queued()), (2, 0));
        s.release();
        s.release();
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn cancelled_waiters_leave_and_pass_granted_permits_on() {
        let s = Semaphore::new(1, 3, None);
        assert!(s.try_acquire());
        let a = s.acquire();
        let b = s.acquire();
        s.cancel(granted(&a).unwrap());
        assert_eq!(s.queued(), 1);
        s.release(); // to b
        assert!(granted(&b).unwrap().is_granted());
        s.cancel(granted(&b).unwrap()); // b gives up after all: its permit returns
        assert_eq!((s.in_use(), s.queued()), (0, 0));
        assert!(s.try_acquire());
    }

    /// A queued call polled from one task and then from another (moved,
    /// or raced by `select!`) must wake the task that polled it last.
    #[test]
    fn the_last_registered_task_is_woken() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let first = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let second = std::sync::Arc::new(Count(AtomicUsize::new(0)));

        let s = Semaphore::new(1, 1, None);
        assert!(s.try_acquire());
        let queued = s.acquire();
        let waiter = granted(&queued).unwrap();
        waiter.register(&Waker::from(first.clone()));
        waiter.register(&Waker::from(first.clone()));
        waiter.register(&Waker::from(second.clone()));
        s.release();
        assert!(waiter.is_granted());
        assert_eq!(
            first.0.load(SeqCst),
            0,
            "the task that moved on is not woken"
        );
        assert_eq!(second.0.load(SeqCst), 1, "the task polling now is woken");
    }

    #[test]
    fn a_lowered_limit_is_a_debt_that_releases_pay_first() {
        let s = Semaphore::new(3, 2, None);
        for _ in 0..3 {
            assert!(s.try_acquire());
        }
        s.set_limit(1);
        assert_eq!((s.limit(), s.in_use()), (1, 3), "no call is cut off");
        let queued = s.acquire();
        let waiter = granted(&queued).unwrap();
        s.release();
        s.release();
        assert!(!waiter.is_granted(), "two releases paid the debt of two");
        assert_eq!(s.in_use(), 1);
        s.release();
        assert!(waiter.is_granted(), "the third is the new limit's permit");
        assert_eq!((s.in_use(), s.queued()), (1, 0));
        s.release();
        assert_eq!(s.in_use(), 0);
        assert!(s.try_acquire());
        assert!(!s.try_acquire(), "one permit, as set");
    }

    #[test]
    fn a_raised_limit_serves_the_queue_in_order() {
        let s = Semaphore::new(1, 3, None);
        assert!(s.try_acquire());
        let a = s.acquire();
        let b = s.acquire();
        let c = s.acquire();
        s.set_limit(3);
        assert!(granted(&a).unwrap().is_granted());
        assert!(granted(&b).unwrap().is_granted());
        assert!(
            !granted(&c).unwrap().is_granted(),
            "two new permits, two callers"
        );
        assert_eq!((s.limit(), s.in_use(), s.queued()), (3, 3, 1));
        s.set_limit(3);
        assert_eq!(
            (s.in_use(), s.queued()),
            (3, 1),
            "the same limit changes nothing"
        );
    }

    /// A raise adds its permits at once, whatever its size: each queued
    /// caller gets one, and the rest are free. (It released them one by one,
    /// which took half a minute for a raise to 2^30.)
    #[test]
    fn a_large_raise_serves_the_queue_and_frees_the_rest() {
        let s = Semaphore::new(1, 3, None);
        assert!(s.try_acquire());
        let queued: Vec<_> = (0..3).map(|_| s.acquire()).collect();
        s.set_limit(Semaphore::MAX_PERMITS);
        assert!(queued.iter().all(|q| granted(q).unwrap().is_granted()));
        assert_eq!((s.in_use(), s.queued()), (4, 0));
        assert_eq!(
            Word(s.word.load(SeqCst)).available(),
            (Semaphore::MAX_PERMITS - 4) as i32
        );
        // And from a debt: the debt is paid, the rest added.
        s.set_limit(2);
        assert_eq!(Word(s.word.load(SeqCst)).available(), -2);
        s.set_limit(5);
        assert_eq!((s.in_use(), Word(s.word.load(SeqCst)).available()), (4, 1));
    }

    /// Threads take and give back permits while another moves the limit
    /// up and down: no more permits are ever out than the highest limit
    /// set, and at the end every permit is back at the last limit.
    #[test]
    fn a_limit_moved_under_load_loses_no_permit() {
        use std::sync::atomic::AtomicI64;
        let s = Arc::new(Semaphore::new(4, 1000, None));
        let holding = Arc::new(AtomicI64::new(0));
        let most = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (s, holding, most) = (s.clone(), holding.clone(), most.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        if take_or_give_up(&s, i % 3 == 0) {
                            let now = holding.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            holding.fetch_sub(1, SeqCst);
                            s.release();
                        }
                    }
                })
            })
            .collect();
        let mover = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(SeqCst) {
                    s.set_limit(1 + n % 4);
                    n += 1;
                    std::thread::yield_now();
                }
                s.set_limit(2);
            })
        };
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, SeqCst);
        mover.join().unwrap();
        assert!(most.load(SeqCst) <= 4, "at most the highest limit at once");
        assert_eq!((s.limit(), s.in_use(), s.queued()), (2, 0, 0));
        assert!(s.try_acquire() && s.try_acquire() && !s.try_acquire());
    }

    #[test]
    fn no_permit_is_lost_under_threads() {
        let s = Arc::new(Semaphore::new(3, 1000, None));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        if take_or_give_up(&s, i % 2 == 0) {
                            s.release();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((s.in_use(), s.queued()), (0, 0));
    }
}
