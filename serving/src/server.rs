//! The actix-web server: every worker's app, and the middleware that bounds requests in
//! flight and times each one for the per-route histograms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpMessage, HttpServer, ResponseError, web};

use crate::api::{self, AppState};
use crate::{ServingError, metrics};

/// Routes that stay open and unlimited: probes and scrapes must work under load.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The route label of requests no route matched (404s).
const UNMATCHED: &str = "unmatched";

/// One request in flight; released on drop, however the request ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        let slot = Self(count.clone());
        (before < max).then_some(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds the API on `state.cfg.bind` and returns the running server (poll or spawn it)
/// and the address it actually listens on (port 0 picks a free port). Without API keys
/// it listens only on loopback.
pub fn start(state: AppState) -> std::io::Result<(Server, SocketAddr)> {
    let bind = state.cfg.bind.clone();
    let ip_is_loopback = bind
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    if !state.cfg.auth.enabled() {
        if !ip_is_loopback {
            return Err(std::io::Error::other(format!(
                "serving.auth: no API keys are configured, so the API is open and may only \
                 listen on loopback, not {bind}; set serving.auth.read/write/admin"
            )));
        }
        tracing::warn!(%bind, "no API keys configured: the API is open, on loopback only");
    }
    let workers = state.cfg.workers;
    let max_body = state.cfg.max_body_bytes;
    let max_in_flight = state.cfg.max_in_flight;
    let data = web::Data::new(state);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut server = HttpServer::new(move || {
        let (data_mw, in_flight) = (data.clone(), in_flight.clone());
        App::new()
            .app_data(data.clone())
            .configure(|c| api::configure(c, max_body))
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let method = metrics::method_label(req.method());
                let slot = if EXEMPT.contains(&req.path()) {
                    None
                } else {
                    Some(InFlight::acquire(&in_flight, max_in_flight))
                };
                let (call, rejected) = match slot {
                    Some(None) => {
                        data_mw
                            .metrics
                            .in_flight_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        let resp = ServingError::Unavailable(format!(
                            "more than {max_in_flight} requests in flight; retry shortly"
                        ))
                        .error_response();
                        // Never routed: find its route the slow way (rare by design).
                        let route = req
                            .match_pattern()
                            .and_then(|p| api::ROUTES.into_iter().find(|r| *r == p));
                        let resp = req.into_response(resp);
                        resp.request()
                            .extensions_mut()
                            .insert(api::RouteLabel(route.unwrap_or(UNMATCHED)));
                        (None, Some(resp))
                    }
                    _ => (Some(srv.call(req)), None),
                };
                let data = data_mw.clone();
                async move {
                    let _slot = slot;
                    let res = match (call, rejected) {
                        (Some(call), _) => call.await?.map_into_boxed_body(),
                        (None, Some(rejected)) => rejected,
                        (None, None) => unreachable!("a request is either called or rejected"),
                    };
                    let route = res
                        .request()
                        .extensions()
                        .get::<api::RouteLabel>()
                        .map_or(UNMATCHED, |r| r.0);
                    data.metrics.observe(
                        route,
                        method,
                        res.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                    Ok(res)
                }
            })
    })
    .disable_signals()
    // Each response goes out as soon as it is written: with Nagle's algorithm (actix
    // leaves it on), a response written in parts, or behind a pipelined one, waits for
    // the client's delayed ACK (40 ms on Linux).
    .tcp_nodelay(true)
    .shutdown_timeout(5);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.bind(&bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("server bound no address"))?;
    Ok((server.run(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_bounded_and_released() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = InFlight::acquire(&count, 2).expect("first");
        let b = InFlight::acquire(&count, 2).expect("second");
        assert!(InFlight::acquire(&count, 2).is_none(), "third is refused");
        assert_eq!(count.load(Ordering::Relaxed), 2, "a refusal holds no slot");
        drop(a);
        let c = InFlight::acquire(&count, 2).expect("a released slot is reusable");
        drop((b, c));
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
