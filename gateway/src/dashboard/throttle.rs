//! Sign-in throttling, per gateway process. Each password check is an
//! Argon2id run (19 MiB) inside PostgreSQL on the pool the API shares, so at
//! most `MAX_CHECKS` run at once; and after `FAILURES` wrong passwords for an
//! email within `window`, that email is refused until the window has passed.
//! Unknown emails are counted alike, so a refusal says nothing about who exists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct SignInThrottle {
    checks: Semaphore,
    window: Duration,
    /// Wrong passwords by email: how many, since when.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl SignInThrottle {
    pub const MAX_CHECKS: usize = 4;
    pub const FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Bounds memory under a flood of distinct emails; a full map starts over.
    const CAPACITY: usize = 10_000;

    pub fn new(window: Duration) -> Self {
        SignInThrottle { checks: Semaphore::new(Self::MAX_CHECKS), window, failures: Mutex::new(HashMap::new()) }
    }

    /// A slot for one password check, or none when `MAX_CHECKS` are running.
    pub fn check(&self) -> Option<SemaphorePermit<'_>> {
        self.checks.try_acquire().ok()
    }

    /// Whether `email` has had `FAILURES` wrong passwords within the window.
    pub fn locked(&self, email: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(email).is_some_and(|(n, since)| *n >= Self::FAILURES && since.elapsed() < self.window)
    }

    pub fn failed(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= Self::CAPACITY {
            failures.clear();
        }
        let entry = failures.entry(email.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, email: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_passwords_lock_an_email_for_the_window_only() {
        let t = SignInThrottle::new(Duration::from_millis(80));
        for _ in 0..SignInThrottle::FAILURES - 1 {
            t.failed("a@example.com");
        }
        assert!(!t.locked("a@example.com"));
        t.failed("a@example.com");
        assert!(t.locked("a@example.com"));
        assert!(!t.locked("b@example.com"), "other emails are not affected");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.locked("a@example.com"), "the lock ends with the window");
        t.failed("a@example.com");
        assert!(!t.locked("a@example.com"), "a new window counts from one");
    }

    #[test]
    fn a_success_forgets_the_failures_and_checks_are_bounded() {
        let t = SignInThrottle::new(SignInThrottle::WINDOW);
        for _ in 0..SignInThrottle::FAILURES {
            t.failed("a@example.com");
        }
        t.succeeded("a@example.com");
        assert!(!t.locked("a@example.com"));
        let permits: Vec<_> = (0..SignInThrottle::MAX_CHECKS).map(|_| t.check().expect("a free slot")).collect();
        assert!(t.check().is_none(), "no more than MAX_CHECKS at once");
        drop(permits);
        assert!(t.check().is_some());
    }
}
