//! `GET /dashboard`: the web dashboard, one self-contained page compiled into the binary (no
//! CDN, no external fetch). It fills itself from the `/api/*` views and updates live from the
//! `/events` stream; `data-height`, `data-peers` and `data-plot-points` on `<body>` say what it
//! shows (the browser test reads them).

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use crate::ApiState;

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// The handler.
pub(crate) async fn page(State(_): State<ApiState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
        .into_response()
}
