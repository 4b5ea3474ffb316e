//! The HTTP application around the component routers: CORS, request spans
//! and metrics, `/metrics`, and the `M_UNRECOGNIZED` fallbacks.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, StatusCode, header};
use neurite_core::{Config, ErrorKind, MatrixError};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::metrics::Metrics;

/// Builds the whole application from the component routers.
pub(crate) fn app(config: &Config, client_api: Router) -> Router {
    let metrics = Metrics::new();
    let mut app = Router::new().merge(client_api);
    if config.metrics {
        app = app.route("/metrics", get(serve_metrics).with_state(metrics.clone()));
    }
    app.fallback(unrecognized)
        // Registered last so it covers every route above.
        .method_not_allowed_fallback(method_not_allowed)
        // A panic anywhere below becomes a 500 M_UNKNOWN, not a dropped connection.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .layer(middleware::from_fn(cors))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    MatrixError::internal("a request handler panicked").into_response()
}

async fn unrecognized() -> MatrixError {
    MatrixError::new(ErrorKind::Unrecognized { status: StatusCode::NOT_FOUND }, "Unrecognized request")
}

async fn method_not_allowed() -> MatrixError {
    MatrixError::new(ErrorKind::Unrecognized { status: StatusCode::METHOD_NOT_ALLOWED }, "Method not allowed")
}

async fn serve_metrics(State(metrics): State<Metrics>) -> Response {
    let mut response = metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The `Server` header of every response: name and version, as Synapse
/// sends it (benchmark tools label results by it).
const SERVER_HEADER: &str = concat!("Neurite/", env!("CARGO_PKG_VERSION"));

/// The CORS headers the spec recommends on every response, and `Server`.
/// `OPTIONS` is answered here without running any endpoint logic, as the
/// spec requires.
async fn cors(request: Request, next: Next) -> Response {
    let mut response =
        if request.method() == Method::OPTIONS { Response::new(Body::from("{}")) } else { next.run(request).await };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
    response
}

/// One span per request (method, route template, and the user and device
/// once authenticated), and the request's metrics. The raw URI is never
/// logged: it may carry an `access_token` query parameter.
async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let endpoint =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        %method,
        endpoint = %endpoint,
        user_id = tracing::field::Empty,
        device_id = tracing::field::Empty,
    );
    let start = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    metrics.record(method.as_str(), &endpoint, status.as_u16(), elapsed.as_secs_f64());
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request");
        }
    });
    response
}
