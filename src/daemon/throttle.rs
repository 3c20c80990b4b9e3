//! Wrong secrets, counted per client address: an address that sends too
//! many within a minute (a token being guessed at the API or the
//! dashboard's sign-in) is refused with 429 until that minute ends, before
//! any handler runs.
//!
//! Webhooks are left out: GitHub and GitLab send from addresses all their
//! users share, so anyone could get the real hooks refused. So are the
//! health probes, which carry no secret. Behind a
//! reverse proxy every client has the proxy's address, and the limit
//! applies to them together.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

/// Wrong secrets one address may send within `WINDOW`.
pub const LIMIT: u32 = 10;
/// How long an address's wrong secrets count, from its first.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once; past it the oldest is forgotten.
const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

impl Throttle {
    /// How long `ip` must still wait, when it is refused at `now`.
    pub fn refused_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("throttle lock");
        let entry = failures.get(&ip)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(entry.since))?;
        (entry.count >= LIMIT && !left.is_zero()).then_some(left)
    }

    /// Count one wrong secret from `ip` at `now`; how many it has sent in
    /// its current window.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, f| now.saturating_duration_since(f.since) < WINDOW);
            if failures.len() >= MAX_ADDRESSES
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(ip, _)| *ip)
            {
                failures.remove(&oldest);
            }
        }
        let fresh = Failures {
            count: 0,
            since: now,
        };
        let entry = failures.entry(ip).or_insert(fresh);
        if now.saturating_duration_since(entry.since) >= WINDOW {
            *entry = fresh;
        }
        entry.count += 1;
        entry.count
    }
}

/// Refuse an address over the limit; count each 401 against its address.
pub async fn guard(
    State(throttle): State<Arc<Throttle>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // Probes carry no secret and must keep answering.
    let exempt = path.starts_with("/hooks/") || path == "/healthz" || path == "/readyz";
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
        .filter(|_| !exempt);
    let Some(ip) = ip else {
        return next.run(request).await;
    };
    if let Some(left) = throttle.refused_for(ip, Instant::now()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, left.as_secs().max(1).to_string())],
            "too many wrong tokens from this address; try again in a minute\n",
        )
            .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED && throttle.failed(ip, Instant::now()) == LIMIT
    {
        warn!(%ip, "{LIMIT} wrong tokens within {WINDOW:?}: refusing this address until then");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit-th wrong secret closes the address until its window ends;
    /// other addresses are not affected; a new window starts from zero.
    #[test]
    fn an_address_is_refused_after_the_limit_until_its_window_ends() {
        let throttle = Throttle::default();
        let (guesser, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for n in 1..LIMIT {
            assert_eq!(throttle.failed(guesser, start), n);
            assert_eq!(throttle.refused_for(guesser, start), None);
        }
        assert_eq!(throttle.failed(guesser, start), LIMIT);
        let later = start + Duration::from_secs(20);
        assert_eq!(
            throttle.refused_for(guesser, later),
            Some(WINDOW - Duration::from_secs(20))
        );
        assert_eq!(throttle.refused_for(other, later), None);
        let next_window = start + WINDOW;
        assert_eq!(throttle.refused_for(guesser, next_window), None);
        assert_eq!(throttle.failed(guesser, next_window), 1);
    }

    /// The addresses remembered are bounded: the oldest goes first.
    #[test]
    fn remembered_addresses_are_bounded() {
        let throttle = Throttle::default();
        let start = Instant::now();
        for n in 0..=MAX_ADDRESSES as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            throttle.failed(ip, start + Duration::from_millis(u64::from(n)));
        }
        let failures = throttle.failures.lock().unwrap();
        assert_eq!(failures.len(), MAX_ADDRESSES);
        assert!(!failures.contains_key(&IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000))));
    }
}
