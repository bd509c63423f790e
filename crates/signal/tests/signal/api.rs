//! Plain HTTP endpoints: the web app's files, /healthz, /api/whoami,
//! /metrics.

use std::sync::Arc;

use serde_json::json;
use signal::{SignalConfig, WebAssets};

use crate::support::{config, start, ADMIN};

#[tokio::test]
async fn whoami_healthz_and_assets() {
    let server = start(SignalConfig {
        web_root: WebAssets {
            files: vec![
                (
                    "/index.html",
                    "text/html; charset=utf-8",
                    b"<!doctype html><p>app</p>",
                ),
                ("/app.js", "text/javascript; charset=utf-8", b"export {};"),
            ],
        },
        ..config()
    })
    .await;

    let r = server.get("/api/whoami", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"ip": "127.0.0.1", "port": r.local_port}));

    let r = server.get("/healthz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));

    for path in ["/", "/index.html", "/?room=abc"] {
        let r = server.get(path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, "<!doctype html><p>app</p>");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let r = server.get("/app.js", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "export {};");
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    for path in ["/nope.js", "/app.js/", "/../app.js", "/api/nothing"] {
        assert_eq!(server.get(path, &[]).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn empty_web_root_is_404() {
    let server = start(config()).await;
    assert_eq!(server.get("/", &[]).await.status, 404);
}

#[tokio::test]
async fn metrics_need_the_token() {
    let server = start(SignalConfig {
        metrics: Some(Arc::new(|| "relay_allocations 3\n".to_owned())),
        ..config()
    })
    .await;
    let (_a, _) = server.joined("m").await;
    // Loopback is not the operator: no token, no metrics.
    let r = server.get("/metrics", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        server
            .get("/metrics", &["Authorization: Bearer no"])
            .await
            .status,
        403
    );
    let r = server.get("/metrics", &[ADMIN]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(r.body.starts_with("relay_allocations 3\n"), "{}", r.body);
    assert!(r.body.contains("\nonionrtc_signal_rooms 1\n"), "{}", r.body);
    assert!(
        r.body.contains("\nonionrtc_signal_joins_total 1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("\nonionrtc_signal_connections 1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("onionrtc_signal_web_refused_total{reason=\"per_address\"} 0\n"),
        "{}",
        r.body
    );

    // No renderer: 404.
    let server = start(config()).await;
    assert_eq!(server.get("/metrics", &[ADMIN]).await.status, 404);
}

#[tokio::test]
async fn without_a_token_operator_endpoints_are_closed() {
    let server = start(SignalConfig {
        metrics: Some(Arc::new(String::new)),
        admin_token: None,
        ..config()
    })
    .await;
    for path in ["/metrics", "/api/calls", "/calls", "/api/calls/00"] {
        assert_eq!(server.get(path, &[]).await.status, 403, "{path}");
        assert_eq!(server.get(path, &[ADMIN]).await.status, 403, "{path}");
    }
}
