//! A counting semaphore whose uncontended acquire and release are one
//! compare-and-swap each, with a bounded FIFO queue for the contended case.
//!
//! tokio's `Semaphore` takes its waiter-list mutex on every release, even
//! when nobody waits; a bulkhead's free path must not take a lock. Here the
//! permits and the number of queued waiters share one atomic word: a release
//! that sees no waiter just adds a permit; only a release that sees one
//! takes the queue lock and hands its permit to the oldest waiter directly,
//! so a newcomer can never overtake the queue.

use std::collections::VecDeque;
use std::task::Waker;

use std::sync::atomic::Ordering::*;

use crate::sync::{Arc, AtomicBool, AtomicU64, CachePadded, Mutex, MutexGuard};

/// A queued caller's handle on its place.
pub(crate) type WaiterRef = Arc<Waiter>;

/// Available permits in the low half, queued waiters in the high half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    const WAITER: u64 = 1 << 32;

    fn available(self) -> u32 {
        self.0 as u32
    }

    fn waiters(self) -> u32 {
        (self.0 >> 32) as u32
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
    max_queue: u32,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

impl Semaphore {
    pub(crate) fn new(permits: u32, max_queue: u32) -> Self {
        Self {
            word: CachePadded(AtomicU64::new(u64::from(permits))),
            max_queue,
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
        while word.waiters() == 0 && word.available() > 0 {
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
            let next = if word.waiters() == 0 && word.available() > 0 {
                word.0 - 1
            } else if word.waiters() < self.max_queue {
                word.0 + Word::WAITER
            } else {
                return Acquire::Full;
            };
            match self
                .word
                .compare_exchange_weak(word.0, next, AcqRel, Relaxed)
            {
                Ok(_) if next < word.0 => return Acquire::Permit,
                Ok(_) => break,
                Err(actual) => word = Word(actual),
            }
        }
        let waiter = Arc::new(Waiter::default());
        queue.push_back(waiter.clone());
        Acquire::Queued(waiter)
    }

    /// Gives a permit back: to the oldest waiter if there is one.
    #[inline]
    pub(crate) fn release(&self) {
        let mut word = Word(self.word.load(Relaxed));
        while word.waiters() == 0 {
            match self
                .word
                .compare_exchange_weak(word.0, word.0 + 1, Release, Relaxed)
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
                self.word.fetch_sub(Word::WAITER, AcqRel);
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
                self.word.fetch_add(1, Release);
            }
        }
    }

    /// Withdraws a waiter that gives up (its wait expired, or it was
    /// dropped). If a permit reached it first, that permit is passed on.
    pub(crate) fn cancel(&self, waiter: &Arc<Waiter>) {
        let mut queue = self.lock();
        if let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(at);
            self.word.fetch_sub(Word::WAITER, AcqRel);
            return;
        }
        drop(queue);
        if waiter.is_granted() {
            self.release();
        }
    }

    /// Permits in use.
    pub(crate) fn in_use(&self, permits: u32) -> u32 {
        permits - Word(self.word.load(Acquire)).available()
    }

    /// Callers in the queue.
    pub(crate) fn queued(&self) -> u32 {
        Word(self.word.load(Acquire)).waiters()
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
            let s = Arc::new(Semaphore::new(1, 2));
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let s = s.clone();
                    loom::thread::spawn(move || match s.acquire() {
                        Acquire::Permit => s.release(),
                        Acquire::Queued(w) => {
                            if i == 0 {
                                s.cancel(&w);
                            } else {
                                while !w.is_granted() {
                                    loom::thread::yield_now();
                                }
                                s.release();
                            }
                        }
                        Acquire::Full => {}
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!((s.in_use(1), s.queued()), (0, 0));
        });
    }

    /// A release racing a newcomer: the release goes to the queued caller,
    /// never to the newcomer, whatever the interleaving.
    #[test]
    fn loom_queued_callers_are_served() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 1));
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
            assert_eq!((s.in_use(1), s.queued()), (0, 0));
        });
    }

    /// A release landing between a caller's lock-free attempt and its
    /// taking the queue's lock: the caller, under the lock, finds the freed
    /// permit and takes it, or queues and is handed it. Either way it holds
    /// the permit once the release is done, and nothing is left over.
    #[test]
    fn loom_a_release_racing_the_queue_lock_reaches_the_caller() {
        loom::model(|| {
            let s = Arc::new(Semaphore::new(1, 1));
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
            assert_eq!((s.in_use(1), s.queued()), (1, 0));
            s.release();
            assert_eq!((s.in_use(1), s.queued()), (0, 0));
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
        let s = Semaphore::new(2, 2);
        assert!(matches!(s.acquire(), Acquire::Permit));
        assert!(matches!(s.acquire(), Acquire::Permit));
        let a = s.acquire();
        let b = s.acquire();
        assert!(matches!(s.acquire(), Acquire::Full));
        assert_eq!((s.in_use(2), s.queued()), (2, 2));
        // Releases go to the queue in order, never to a newcomer.
        s.release();
        assert!(granted(&a).unwrap().is_granted());
        assert!(!granted(&b).unwrap().is_granted());
        assert!(!s.try_acquire(), "a newcomer may not overtake the queue");
        s.release();
        assert!(granted(&b).unwrap().is_granted());
        assert_eq!((s.in_use(2), s.queued()), (2, 0));
        s.release();
        s.release();
        assert_eq!(s.in_use(2), 0);
    }

    #[test]
    fn cancelled_waiters_leave_and_pass_granted_permits_on() {
        let s = Semaphore::new(1, 3);
        assert!(s.try_acquire());
        let a = s.acquire();
        let b = s.acquire();
        s.cancel(granted(&a).unwrap());
        assert_eq!(s.queued(), 1);
        s.release(); // to b
        assert!(granted(&b).unwrap().is_granted());
        s.cancel(granted(&b).unwrap()); // b gives up after all: its permit returns
        assert_eq!((s.in_use(1), s.queued()), (0, 0));
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

        let s = Semaphore::new(1, 1);
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
    fn no_permit_is_lost_under_threads() {
        let s = Arc::new(Semaphore::new(3, 1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        match s.acquire() {
                            Acquire::Permit => s.release(),
                            Acquire::Queued(w) => {
                                if i % 2 == 0 {
                                    s.cancel(&w);
                                } else {
                                    while !w.is_granted() {
                                        std::thread::yield_now();
                                    }
                                    s.release();
                                }
                            }
                            Acquire::Full => {}
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((s.in_use(3), s.queued()), (0, 0));
    }
}
