//! Sign-in throttling, per gateway process. Each password check is an
//! Argon2id run (19 MiB) inside PostgreSQL on the pool the API shares, so at
//! most `MAX_CHECKS` run at once. Before a request may take one, its client
//! address must be within its own budget (one check at a time, `ADDRESS_RATE`
//! a minute): a flood from one address cannot take the slots an operator
//! needs. Wrong passwords are counted per client address and email, and
//! counted before the check runs, so concurrent guesses cannot race past
//! `FAILURES`; a flood cannot lock an operator out from their own address.
//! Unknown emails are counted alike, so a refusal says nothing about who exists.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct SignInThrottle {
    checks: Semaphore,
    window: Duration,
    /// Per client address: checks in flight, and attempts in the current minute since when.
    addresses: Mutex<Counts<IpAddr, (u32, u32)>>,
    /// Wrong passwords (and checks under way) by client address and email.
    failures: Mutex<Counts<(IpAddr, String), u32>>,
}

/// Why a sign-in may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address and email had `FAILURES` wrong passwords within the window.
    Locked,
    /// This address is over its budget, or every check slot is taken.
    Busy,
}

/// A sign-in being checked: its slot and its place in the counts. Dropped
/// without `succeeded`, it stays counted as a wrong password.
pub struct Attempt<'a> {
    throttle: &'a SignInThrottle,
    address: IpAddr,
    email: String,
    _slot: SemaphorePermit<'a>,
}

impl Attempt<'_> {
    pub fn succeeded(self) {
        self.throttle
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .remove(&(self.address, self.email.clone()));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.throttle.release(self.address);
    }
}

impl SignInThrottle {
    pub const MAX_CHECKS: usize = 4;
    pub const FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Attempts one client address may make a minute.
    pub const ADDRESS_RATE: u32 = 10;
    const MINUTE: Duration = Duration::from_secs(60);
    /// Bounds memory under a flood of distinct addresses or emails: the oldest entries go first.
    const CAPACITY: usize = 10_000;

    pub fn new(window: Duration) -> Self {
        SignInThrottle {
            checks: Semaphore::new(Self::MAX_CHECKS),
            window,
            addresses: Mutex::new(Counts::default()),
            failures: Mutex::new(Counts::default()),
        }
    }

    /// A check for `email` from `address`, counted as a wrong password until it succeeds;
    /// or why not now.
    pub fn begin(&self, address: IpAddr, email: &str) -> Result<Attempt<'_>, Refusal> {
        let key = (address, email.to_string());
        {
            // Looked at under the addresses' lock, where this address's one check in flight is
            // counted: every earlier guess from it has been counted by now.
            let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if failures.current(&key, self.window).is_some_and(|n| *n >= Self::FAILURES) {
                return Err(Refusal::Locked);
            }
            drop(failures);
            let (in_flight, attempts) = addresses.entry(address, Self::MINUTE, (0, 0));
            if *in_flight >= 1 || *attempts >= Self::ADDRESS_RATE {
                return Err(Refusal::Busy);
            }
            *in_flight += 1;
            *attempts += 1;
        }
        let Ok(slot) = self.checks.try_acquire() else {
            self.release(address);
            return Err(Refusal::Busy);
        };
        // Counted before the check runs, while the address's one check is in flight.
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone(), self.window, 0) += 1;
        Ok(Attempt { throttle: self, address, email: key.1, _slot: slot })
    }

    /// The address's check is over (done, or refused for want of a slot).
    fn release(&self, address: IpAddr) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(((in_flight, _), _)) = addresses.map.get_mut(&address) {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

/// A bounded map of counts that start afresh after their window. When full, expired entries go
/// first, then the one counting least, the oldest of those: a flood of new keys never frees
/// a lock.
struct Counts<K, V> {
    map: HashMap<K, (V, Instant)>,
}

impl<K, V> Default for Counts<K, V> {
    fn default() -> Self {
        Counts { map: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone, V> Counts<K, V> {
    fn current(&self, key: &K, window: Duration) -> Option<&V> {
        self.map.get(key).filter(|(_, since)| since.elapsed() < window).map(|(v, _)| v)
    }

    /// The count of `key` in its window, started at `fresh` when there is none (or it expired).
    fn entry(&mut self, key: K, window: Duration, fresh: V) -> &mut V
    where
        V: Clone + Ord,
    {
        if !self.map.contains_key(&key) && self.map.len() >= SignInThrottle::CAPACITY {
            self.map.retain(|_, (_, since)| since.elapsed() < window);
            if self.map.len() >= SignInThrottle::CAPACITY {
                let least = self.map.iter().min_by_key(|(_, (v, since))| (v.clone(), *since)).map(|(k, _)| k.clone());
                if let Some(least) = least {
                    self.map.remove(&least);
                }
            }
        }
        let entry = self.map.entry(key).or_insert_with(|| (fresh.clone(), Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (fresh, Instant::now());
        }
        &mut entry.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const FLOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    fn wrong(t: &SignInThrottle, address: IpAddr, email: &str) -> Result<(), Refusal> {
        t.begin(address, email).map(drop)
    }

    #[test]
    fn five_wrong_passwords_lock_an_address_and_email_for_the_window_only() {
        let t = SignInThrottle::new(Duration::from_millis(80));
        for _ in 0..SignInThrottle::FAILURES {
            wrong(&t, FLOOD, "a@example.com").unwrap();
        }
        assert_eq!(wrong(&t, FLOOD, "a@example.com"), Err(Refusal::Locked));
        assert!(t.begin(HOME, "a@example.com").is_ok(), "the operator's own address is not locked out");
        assert!(wrong(&t, FLOOD, "b@example.com").is_ok(), "other emails are not affected");
        std::thread::sleep(Duration::from_millis(100));
        assert!(wrong(&t, FLOOD, "a@example.com").is_ok(), "the lock ends with the window");
    }

    #[test]
    fn guesses_are_counted_before_they_are_checked_and_slots_are_bounded() {
        let t = SignInThrottle::new(SignInThrottle::WINDOW);
        let held: Vec<_> = (0..SignInThrottle::MAX_CHECKS as u8)
            .filter_map(|i| t.begin(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)), "x@example.com").ok())
            .collect();
        assert_eq!(held.len(), SignInThrottle::MAX_CHECKS);
        assert_eq!(wrong(&t, HOME, "x@example.com"), Err(Refusal::Busy), "no slot left");
        drop(held);
        // A guess counts as wrong from the moment it is checked, not once it has failed.
        let attempt = t.begin(FLOOD, "y@example.com").unwrap();
        assert_eq!(*t.failures.lock().unwrap().current(&(FLOOD, "y@example.com".into()), t.window).unwrap(), 1);
        drop(attempt);
        let allowed = 1 + (0..20).filter(|_| wrong(&t, FLOOD, "y@example.com").is_ok()).count() as u32;
        assert_eq!(allowed, SignInThrottle::FAILURES, "never more checks than FAILURES for one address and email");
    }

    #[test]
    fn one_address_takes_one_slot_at_a_time_and_a_bounded_number_a_minute() {
        let t = SignInThrottle::new(SignInThrottle::WINDOW);
        let first = t.begin(FLOOD, "a@example.com").unwrap();
        assert_eq!(wrong(&t, FLOOD, "b@example.com"), Err(Refusal::Busy), "one check at a time per address");
        assert!(t.begin(HOME, "me@example.com").unwrap().succeeded_for_test(), "another address gets a slot");
        drop(first);
        let mut made = 1;
        while wrong(&t, FLOOD, &format!("{made}@example.com")).is_ok() {
            made += 1;
        }
        assert_eq!(made, SignInThrottle::ADDRESS_RATE, "then the address waits for the next minute");
    }

    #[test]
    fn a_success_forgets_the_failures_and_a_full_table_evicts_only_the_oldest() {
        let t = SignInThrottle::new(SignInThrottle::WINDOW);
        for _ in 0..SignInThrottle::FAILURES - 1 {
            wrong(&t, HOME, "a@example.com").unwrap();
        }
        t.begin(HOME, "a@example.com").unwrap().succeeded();
        for _ in 0..SignInThrottle::FAILURES {
            wrong(&t, HOME, "a@example.com").unwrap();
        }
        assert_eq!(wrong(&t, HOME, "a@example.com"), Err(Refusal::Locked));
        // A flood of unknown emails fills the table: the oldest go, the lock above stays.
        let mut failures = t.failures.lock().unwrap();
        for i in 0..SignInThrottle::CAPACITY + 1_200 {
            *failures.entry((FLOOD, format!("{i}@example.com")), SignInThrottle::WINDOW, 0) += 1;
        }
        assert!(failures.map.len() <= SignInThrottle::CAPACITY);
        drop(failures);
        assert_eq!(wrong(&t, HOME, "a@example.com"), Err(Refusal::Locked), "not unlocked by the flood");
    }

    impl Attempt<'_> {
        fn succeeded_for_test(self) -> bool {
            self.succeeded();
            true
        }
    }
}
