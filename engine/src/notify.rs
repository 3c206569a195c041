//! A worker-local, one-shot broadcast: "this listener stops" or "the worker is
//! draining". Many tasks wait; one call wakes them all. Single-threaded (Rc),
//! so it costs no atomics.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHashMap;

#[derive(Default)]
pub struct Notify {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<FxHashMap<u64, Waker>>,
}

impl Notify {
    pub fn fire(&self) {
        self.fired.set(true);
        for (_, w) in self.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once `fire` has been called (at once if it already was).
    pub fn fired(&self) -> Fired<'_> {
        Fired {
            notify: self,
            id: None,
        }
    }
}

pub struct Fired<'a> {
    notify: &'a Notify,
    id: Option<u64>,
}

impl Future for Fired<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.fired.get() {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = self.notify.next_id.get();
                self.notify.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        self.notify
            .waiters
            .borrow_mut()
            .insert(id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Fired<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.notify.waiters.borrow_mut().remove(&id);
        }
    }
}
