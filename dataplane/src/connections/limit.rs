//! `MAX_CONNECTIONS_PER_MINUTE`: a fixed one-minute window over all transports, per process, as in
//! RIG. Lock-free: one atomic for the window start, one for the count.
//!
//! Beyond RIG, each client gets at most a share of that budget
//! (`RIG_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT`, default a tenth of it), so one client cannot spend
//! the whole minute's budget and lock everyone else out. A client is its IP address (an IPv6
//! client by its /64, which one host usually holds whole), taken from the socket, or from the last
//! entry of `RIG_CLIENT_IP_HEADER` (e.g. `x-forwarded-for`, whose last entry the nearest proxy
//! writes) when the gateway runs behind a proxy. A client refused by its share spends nothing of
//! the shared budget. The table of clients is bounded ([`MAX_CLIENTS`]); beyond it, new clients of
//! the minute are held to the shared budget only (memory never grows with spoofed addresses).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use tokio::time::Instant;

/// Clients tracked per minute, at most (about 40 bytes each).
pub const MAX_CLIENTS: usize = 65_536;
const CLIENT_SHARDS: usize = 16;

/// Who a connection attempt comes from, for the per-client share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(u128);

impl Client {
    /// The client at `ip` (IPv6: its /64; IPv4-mapped IPv6: the IPv4 address).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) << 64 | 1 << 32),
            },
        }
    }

    /// The client of a request from `peer`: the last entry of `header` when it is configured and
    /// holds an IP address, else the socket's address.
    pub fn from_request(
        peer: SocketAddr,
        header: Option<&HeaderName>,
        headers: &HeaderMap,
    ) -> Self {
        let value = header.and_then(|name| headers.get_all(name).iter().next_back());
        Self::from_header(peer, value.map(http::HeaderValue::as_bytes))
    }

    /// The client of a request from `peer` whose client-address header's last value is `value`.
    pub fn from_header(peer: SocketAddr, value: Option<&[u8]>) -> Self {
        let forwarded = value.and_then(|v| {
            let entry = std::str::from_utf8(v).ok()?.rsplit(',').next()?.trim();
            // `ip`, or `ip:port` / `[v6]:port` as some proxies write it.
            entry
                .parse::<IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
                .ok()
        });
        Self::of(forwarded.unwrap_or(peer.ip()))
    }
}

/// Why a connection attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process's budget for this minute is spent (RIG's limit).
    Process,
    /// This client's share of it is spent.
    Client,
}

const WINDOW: Duration = Duration::from_secs(60);

/// Counts connection attempts per fixed one-minute window, in all and per client.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    per_client: u64,
    origin: Instant,
    window: AtomicU64,
    count: AtomicU64,
    /// Per shard: the minute it counts, and the attempts per client in it.
    clients: [Mutex<(u64, HashMap<Client, u64>)>; CLIENT_SHARDS],
}

impl RateLimiter {
    /// Allow `limit` new connections per minute (0 = no limit), at most `per_client` of them
    /// from one client (0 = no per-client share).
    pub fn per_minute(limit: u64, per_client: u64) -> Self {
        Self {
            limit,
            // A share of the whole budget (or more) is no share: the budget's own answer (RIG's)
            // applies, as for tiny budgets whose tenth rounds up to all of it.
            per_client: if limit > 0 && per_client >= limit {
                0
            } else {
                per_client
            },
            origin: Instant::now(),
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            clients: std::array::from_fn(|_| Mutex::new((0, HashMap::new()))),
        }
    }

    /// Take one slot for `client`; refused when its share or the process's budget for this
    /// minute is spent.
    pub fn try_acquire_for(&self, client: Client) -> Result<(), Refusal> {
        if self.per_client > 0 && !self.take_client_slot(client) {
            return Err(Refusal::Client);
        }
        if self.try_acquire() {
            Ok(())
        } else {
            Err(Refusal::Process)
        }
    }

    fn minute(&self) -> u64 {
        self.origin.elapsed().as_secs() / WINDOW.as_secs()
    }

    fn take_client_slot(&self, client: Client) -> bool {
        let now = self.minute();
        let shard = &self.clients[(client.0 as usize ^ (client.0 >> 64) as usize) % CLIENT_SHARDS];
        let mut guard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (minute, counts) = &mut *guard;
        if *minute != now {
            *minute = now;
            counts.clear();
            counts.shrink_to(1024);
        }
        let full = counts.len() >= MAX_CLIENTS / CLIENT_SHARDS;
        match counts.get_mut(&client) {
            Some(count) if *count >= self.per_client => false,
            Some(count) => {
                *count += 1;
                true
            }
            // The table is full this minute: the shared budget alone applies.
            None if full => true,
            None => {
                counts.insert(client, 1);
                true
            }
        }
    }

    /// Take one slot of the process's budget; `false` when this minute's budget is spent.
    pub fn try_acquire(&self) -> bool {
        if self.limit == 0 {
            return true;
        }
        let now = self.minute();
        let current = self.window.load(Ordering::Acquire);
        if now != current
            && self
                .window
                .compare_exchange(current, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Release);
        }
        self.count.fetch_add(1, Ordering::AcqRel) < self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_budget_then_refuses_until_the_next_minute() {
        let limiter = RateLimiter::per_minute(3, 0);
        assert!((0..3).all(|_| limiter.try_acquire()));
        assert!(!limiter.try_acquire());
        tokio::time::advance(WINDOW).await;
        assert!(limiter.try_acquire());
    }

    #[test]
    fn a_share_of_the_whole_budget_is_no_share() {
        let limiter = RateLimiter::per_minute(1, 1);
        let client = ip("10.0.0.1");
        assert_eq!(limiter.try_acquire_for(client), Ok(()));
        assert_eq!(limiter.try_acquire_for(client), Err(Refusal::Process));
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::per_minute(0, 0);
        assert!((0..10_000).all(|_| limiter.try_acquire()));
    }

    fn ip(s: &str) -> Client {
        Client::of(s.parse().expect("ip"))
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_spends_only_its_share_and_its_refusals_cost_others_nothing() {
        let limiter = RateLimiter::per_minute(10, 3);
        let greedy = ip("10.0.0.1");
        assert!((0..3).all(|_| limiter.try_acquire_for(greedy).is_ok()));
        for _ in 0..100 {
            assert_eq!(limiter.try_acquire_for(greedy), Err(Refusal::Client));
        }
        // 7 of the process's 10 are left for everyone else.
        for n in 0..7 {
            let other = ip(&format!("10.0.1.{n}"));
            assert_eq!(limiter.try_acquire_for(other), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire_for(ip("10.0.2.1")),
            Err(Refusal::Process)
        );
        tokio::time::advance(WINDOW).await;
        assert_eq!(limiter.try_acquire_for(greedy), Ok(()));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:1"));
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
    }

    #[test]
    fn the_client_header_is_read_from_its_last_entry_else_the_socket() {
        let peer: SocketAddr = "192.0.2.9:5000".parse().expect("addr");
        let name = HeaderName::from_static("x-forwarded-for");
        let mut headers = HeaderMap::new();
        headers.insert(&name, "1.1.1.1, 203.0.113.7".parse().expect("value"));
        assert_eq!(
            Client::from_request(peer, Some(&name), &headers),
            ip("203.0.113.7")
        );
        assert_eq!(Client::from_request(peer, None, &headers), ip("192.0.2.9"));
        headers.insert(&name, "1.1.1.1, 203.0.113.8:4711".parse().expect("value"));
        assert_eq!(
            Client::from_request(peer, Some(&name), &headers),
            ip("203.0.113.8")
        );
        headers.insert(&name, "[2001:db8::7]:443".parse().expect("value"));
        assert_eq!(
            Client::from_request(peer, Some(&name), &headers),
            ip("2001:db8::7")
        );
        headers.insert(&name, "garbage".parse().expect("value"));
        assert_eq!(
            Client::from_request(peer, Some(&name), &headers),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn the_client_table_is_bounded() {
        let limiter = RateLimiter::per_minute(0, 1);
        for n in 0..(MAX_CLIENTS as u32 + 1000) {
            let client = Client::of(IpAddr::V4(n.into()));
            assert!(limiter.try_acquire_for(client).is_ok());
        }
        let tracked: usize = limiter
            .clients
            .iter()
            .map(|s| s.lock().expect("lock").1.len())
            .sum();
        assert!(tracked <= MAX_CLIENTS, "{tracked}");
    }
}
