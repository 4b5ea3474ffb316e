//! The [`Ruma`] extractor: one place that reads the body within the size
//! limit, applies rate limits, authenticates the access token as the
//! endpoint's metadata requires, and parses the ruma request type.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use neurite_core::http::{parse_request, read_body};
use neurite_core::{ErrorKind, MatrixError};
use neurite_userapi::Session;
use ruma::api::IncomingRequest;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
};

use crate::ClientApi;

/// Whether an endpoint needs an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    /// 401 `M_MISSING_TOKEN` without one.
    Required,
    /// Used if given (and then it must be valid).
    Optional,
    /// Ignored.
    Ignored,
}

/// Maps ruma's authentication schemes to what the client API enforces.
pub trait AuthRequirement {
    /// The rule for this scheme.
    const RULE: TokenRule;
}

impl AuthRequirement for AccessToken {
    const RULE: TokenRule = TokenRule::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const RULE: TokenRule = TokenRule::Optional;
}
impl AuthRequirement for NoAccessToken {
    const RULE: TokenRule = TokenRule::Ignored;
}
impl AuthRequirement for NoAuthentication {
    const RULE: TokenRule = TokenRule::Ignored;
}
impl AuthRequirement for AppserviceToken {
    const RULE: TokenRule = TokenRule::Required;
}
// Application services are not supported yet: their optional token on
// /register and /login is ignored, as for any other client.
impl AuthRequirement for AppserviceTokenOptional {
    const RULE: TokenRule = TokenRule::Ignored;
}

/// A parsed ruma request with the session of its access token.
pub struct Ruma<T> {
    /// The request.
    pub body: T,
    /// The session, when the endpoint took a token and one was given.
    pub session: Option<Session>,
    /// The address the request came from, for device "last seen" records.
    pub client_ip: Option<IpAddr>,
}

impl<T> Ruma<T> {
    /// The session of an endpoint whose token is required.
    ///
    /// # Panics
    /// If called for an endpoint whose token is not required (a programming error).
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("the extractor requires a token for this endpoint")
    }

    /// 403 `M_FORBIDDEN` unless `owner` is the requesting user: for another
    /// user's filters, profile, and the like (`what` names the resource).
    pub fn require_owner(&self, owner: &ruma::UserId, what: &str) -> neurite_core::MatrixResult<()> {
        if self.session().user_id != owner {
            return Err(MatrixError::forbidden(format!("You cannot use another user's {what}")));
        }
        Ok(())
    }
}

/// The access token of a request: `Authorization: Bearer <token>` or
/// `?access_token=`. Another scheme in `Authorization` (e.g. a proxy's
/// `Basic`) is not an access token and counts as none.
fn access_token(parts: &http::request::Parts) -> Option<String> {
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        return Some(token.to_owned());
    }
    let query = parts.uri.query().unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthRequirement,
    ClientApi: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let api = ClientApi::from_ref(state);
        let (mut parts, body) = request.into_parts();
        let path = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| MatrixError::invalid_param(format!("bad path parameter: {e}")))?;
        let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());

        // Authenticate before rate limiting, so the bucket is the user's: a
        // made-up token gets 401, not a fresh bucket. Endpoints that take no
        // token never look at the Authorization header.
        let rule = <T::Authentication as AuthRequirement>::RULE;
        let token = if rule == TokenRule::Ignored { None } else { access_token(&parts) };
        let session = match (rule, token) {
            (TokenRule::Required, None) => {
                return Err(MatrixError::new(ErrorKind::MissingToken, "Missing access token"));
            }
            (_, Some(token)) => Some(api.users().authenticate(&token, client_ip).await?),
            (_, None) => None,
        };
        if let Some(session) = &session {
            tracing::Span::current()
                .record("user_id", tracing::field::display(&session.user_id))
                .record("device_id", tracing::field::display(&session.device_id));
        }

        if T::RATE_LIMITED
            && let Some(limiter) = api.limiter()
        {
            let key = match (&session, client_ip) {
                (Some(session), _) => format!("u:{}", session.user_id),
                (None, Some(ip)) => format!("a:{ip}"),
                (None, None) => "a:unknown".to_owned(),
            };
            limiter.check(&key)?;
        }

        let body = read_body(body, api.config().max_request_bytes).await?;
        let mut args: Vec<&str> = path.iter().map(|(_, value)| value).collect();
        // An empty last path parameter (a state key) is served by a route without
        // it, e.g. `/state/m.room.name` or `/state/m.room.name/`: pad it back.
        while args.len() < T::_path_parameters().len() {
            args.push("");
        }
        let body = parse_request::<T>(&parts.method, &parts.uri, &parts.headers, &body, &args)?;
        Ok(Self { body, session, client_ip })
    }
}
