//! Per-worker pool of I/O buffers. A connection rents a buffer only while it
//! has bytes to move and gives it back when it goes idle, so idle keep-alive
//! connections hold no buffer memory.

use std::cell::RefCell;

pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    max_free: usize,
}

impl BufPool {
    pub fn new(size: usize, max_free: usize) -> Self {
        BufPool {
            free: RefCell::new(Vec::new()),
            size,
            max_free,
        }
    }

    /// An empty buffer with at least the pool's capacity.
    pub fn get(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    pub fn put(&self, mut buf: Vec<u8>) {
        // Buffers that grew (a large head) are not kept: they would pin memory.
        if buf.capacity() != self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_free {
            buf.clear();
            free.push(buf);
        }
    }
}
