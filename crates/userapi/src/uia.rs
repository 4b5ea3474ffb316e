//! The pure part of user-interactive authentication: which stage may come
//! next, when a flow is complete, and the 401 body the spec describes.

use ruma::api::client::uiaa::AuthType;
use serde_json::{Value, json};

/// Whether `stage` may be completed now: some flow starts with `completed`
/// and has `stage` right after it (flows must be followed in order).
pub(crate) fn stage_allowed(flows: &[Vec<AuthType>], completed: &[String], stage: &str) -> bool {
    flows.iter().any(|flow| {
        flow.len() > completed.len()
            && flow.iter().zip(completed).all(|(a, b)| a.as_str() == b)
            && flow[completed.len()].as_str() == stage
    })
}

/// Whether the completed stages finish some flow.
pub(crate) fn flow_complete(flows: &[Vec<AuthType>], completed: &[String]) -> bool {
    flows.iter().any(|flow| flow.len() <= completed.len() && flow.iter().zip(completed).all(|(a, b)| a.as_str() == b))
}

/// The body of a 401 UIA response: `flows`, `params`, `session`,
/// `completed` once a stage is done, and `errcode`/`error` when the last
/// attempt at a stage failed.
pub(crate) fn body(
    flows: &[Vec<AuthType>],
    session: &str,
    completed: &[String],
    failure: Option<(&str, &str)>,
) -> Value {
    let flows: Vec<Value> =
        flows.iter().map(|f| json!({"stages": f.iter().map(AuthType::as_str).collect::<Vec<_>>()})).collect();
    let mut body = json!({"flows": flows, "params": {}, "session": session});
    if !completed.is_empty() {
        body["completed"] = json!(completed);
    }
    if let Some((errcode, error)) = failure {
        body["errcode"] = json!(errcode);
        body["error"] = json!(error);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows() -> Vec<Vec<AuthType>> {
        vec![vec![AuthType::RegistrationToken, AuthType::Dummy], vec![AuthType::Password]]
    }

    #[test]
    fn stages_follow_flows_in_order() {
        let done = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(stage_allowed(&flows(), &done(&[]), "m.login.registration_token"));
        assert!(!stage_allowed(&flows(), &done(&[]), "m.login.dummy"));
        assert!(stage_allowed(&flows(), &done(&["m.login.registration_token"]), "m.login.dummy"));
        assert!(!flow_complete(&flows(), &done(&["m.login.registration_token"])));
        assert!(flow_complete(&flows(), &done(&["m.login.registration_token", "m.login.dummy"])));
        assert!(flow_complete(&flows(), &done(&["m.login.password"])));
    }

    #[test]
    fn body_has_the_spec_fields() {
        let b = body(&flows(), "abc", &["m.login.registration_token".into()], Some(("M_FORBIDDEN", "no")));
        assert_eq!(
            b,
            json!({
                "flows": [{"stages": ["m.login.registration_token", "m.login.dummy"]}, {"stages": ["m.login.password"]}],
                "params": {}, "session": "abc", "completed": ["m.login.registration_token"],
                "errcode": "M_FORBIDDEN", "error": "no"
            })
        );
    }
}
