//! Filters: `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`.

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{MatrixError, MatrixResult};
use ruma::api::client::filter::{EventFormat, FilterDefinition, create_filter, get_filter};

use crate::{ClientApi, Ruma};

/// # `POST /_matrix/client/v3/user/{userId}/filter`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridfilter)
///
/// ruma's `FilterDefinition` validates the shape (`M_BAD_JSON` otherwise);
/// values it lets through but the spec does not allow are `M_INVALID_PARAM`.
/// The stored form is its re-serialization, so only known fields are kept.
pub(crate) async fn create(
    State(api): State<ClientApi>,
    req: Ruma<create_filter::v3::Request>,
) -> MatrixResult<RumaResponse<create_filter::v3::Response>> {
    req.require_owner(&req.body.user_id, "filters")?;
    if !matches!(req.body.filter.event_format, EventFormat::Client | EventFormat::Federation) {
        return Err(MatrixError::invalid_param("event_format must be 'client' or 'federation'"));
    }
    let filter = serde_json::to_value(&req.body.filter).map_err(MatrixError::internal)?;
    let filter_id = api.users().create_filter(&req.body.user_id, &filter).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(filter_id)))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridfilterfilterid)
pub(crate) async fn get(
    State(api): State<ClientApi>,
    req: Ruma<get_filter::v3::Request>,
) -> MatrixResult<RumaResponse<get_filter::v3::Response>> {
    req.require_owner(&req.body.user_id, "filters")?;
    let filter = api
        .users()
        .filter(&req.body.user_id, &req.body.filter_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("No such filter"))?;
    let filter: FilterDefinition = serde_json::from_value(filter).map_err(MatrixError::internal)?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
