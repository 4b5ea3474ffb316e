//! Devices: `/devices`, `/devices/{deviceId}`, `/delete_devices`.

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{MatrixError, MatrixResult};
use ruma::api::client::device::{Device, delete_device, delete_devices, get_device, get_devices, update_device};
use ruma::{MilliSecondsSinceUnixEpoch, UInt};

use super::confirm_password;
use crate::{ClientApi, Ruma};

fn to_ruma(d: neurite_userapi::Device) -> Device {
    let mut device = Device::new(d.device_id);
    device.display_name = d.display_name;
    device.last_seen_ip = d.last_seen_ip;
    device.last_seen_ts = UInt::new(d.last_seen_ts).map(MilliSecondsSinceUnixEpoch);
    device
}

/// # `GET /_matrix/client/v3/devices`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3devices)
pub(crate) async fn list(
    State(api): State<ClientApi>,
    req: Ruma<get_devices::v3::Request>,
) -> MatrixResult<RumaResponse<get_devices::v3::Response>> {
    let devices = api.users().devices(&req.session().user_id).await?;
    Ok(RumaResponse(get_devices::v3::Response::new(devices.into_iter().map(to_ruma).collect())))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3devicesdeviceid)
pub(crate) async fn get(
    State(api): State<ClientApi>,
    req: Ruma<get_device::v3::Request>,
) -> MatrixResult<RumaResponse<get_device::v3::Response>> {
    let devices = api.users().devices(&req.session().user_id).await?;
    let device = devices
        .into_iter()
        .find(|d| d.device_id == req.body.device_id)
        .ok_or_else(|| MatrixError::not_found("Unknown device"))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_ruma(device))))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3devicesdeviceid)
pub(crate) async fn update(
    State(api): State<ClientApi>,
    req: Ruma<update_device::v3::Request>,
) -> MatrixResult<RumaResponse<update_device::v3::Response>> {
    let body = req.body;
    let session = req.session.expect("the extractor requires a token for this endpoint");
    api.users().rename_device(&session.user_id, &body.device_id, body.display_name).await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3devicesdeviceid)
pub(crate) async fn delete(
    State(api): State<ClientApi>,
    req: Ruma<delete_device::v3::Request>,
) -> MatrixResult<RumaResponse<delete_device::v3::Response>> {
    let session = req.session();
    confirm_password(&api, session, "delete_devices", req.body.auth.as_ref()).await?;
    api.users().delete_devices(&session.user_id, std::slice::from_ref(&req.body.device_id)).await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/delete_devices`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3delete_devices)
pub(crate) async fn delete_many(
    State(api): State<ClientApi>,
    req: Ruma<delete_devices::v3::Request>,
) -> MatrixResult<RumaResponse<delete_devices::v3::Response>> {
    let session = req.session();
    confirm_password(&api, session, "delete_devices", req.body.auth.as_ref()).await?;
    api.users().delete_devices(&session.user_id, &req.body.devices).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
