// Copyright (c) 2021 Anatoly Ikorsky
//
// Licensed under the Apache License, Version 2.0
// <LICENSE-APACHE or http://www.apache.org/licenses/LICENSE-2.0> or the MIT
// license <LICENSE-MIT or http://opensource.org/licenses/MIT>, at your
// option. All files in the project carrying such notice may not be copied,
// modified, or distributed except according to those terms.

use std::{cell::RefCell, mem::take, ops::Deref, sync::OnceLock};

// (binlog-tail: vendor/mysql_async/PATCHES.md) The pool is the calling thread's own: taking and
// giving back a buffer, once per packet, touches no atomic and no other thread's cache line. A
// buffer dropped on another thread joins that thread's pool.

/// The pool's limits, from the environment as before.
#[derive(Debug)]
struct Limits {
    pool_cap: usize,
    buffer_size_cap: usize,
    buffer_init_cap: usize,
}

fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(default)
        };
        Limits {
            pool_cap: var("MYSQL_ASYNC_BUFFER_POOL_CAP", 128),
            buffer_size_cap: var("MYSQL_ASYNC_BUFFER_SIZE_CAP", 4 * 1024 * 1024),
            buffer_init_cap: var("MYSQL_ASYNC_BUFFER_INIT_CAP", 0),
        }
    })
}

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's buffer pool.
#[derive(Debug, Clone, Copy)]
pub struct BufferPool;

impl BufferPool {
    pub fn get(self) -> PooledBuf {
        let buf = POOL
            .try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(limits().buffer_init_cap));
        debug_assert_eq!(buf.len(), 0);
        PooledBuf(buf)
    }

    pub fn get_with<T: AsRef<[u8]>>(self, content: T) -> PooledBuf {
        let mut buf = self.get();
        buf.as_mut().extend_from_slice(content.as_ref());
        buf
    }

    fn put(mut buf: Vec<u8>) {
        let limits = limits();
        buf.clear();
        buf.shrink_to(limits.buffer_size_cap);
        // A full pool, or a thread being torn down, drops the buffer.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < limits.pool_cap {
                pool.push(buf);
            }
        });
    }
}

#[derive(Debug)]
pub struct PooledBuf(Vec<u8>);

impl AsMut<Vec<u8>> for PooledBuf {
    fn as_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &Self::Target {
        self.0.deref()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        BufferPool::put(take(&mut self.0))
    }
}
