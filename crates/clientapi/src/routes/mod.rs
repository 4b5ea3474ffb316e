//! The client API's routes, one module per area of the spec.

mod account;
mod create_room;
mod device;
mod directory;
mod discovery;
mod events;
mod filter;
mod membership;
mod profile;
mod rooms;
mod session;
mod sync;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use neurite_core::http::stable_paths;
use ruma::api::IncomingRequest;

use crate::ClientApi;
use neurite_core::MatrixResult;
use neurite_userapi::{Session, UiaRequest};
use ruma::api::client::uiaa::{AuthData, AuthType};

/// User-interactive authentication with the user's own password, for the
/// endpoints that must confirm it is really them (`purpose` names the endpoint).
async fn confirm_password(
    api: &ClientApi,
    session: &Session,
    purpose: &str,
    auth: Option<&AuthData>,
) -> MatrixResult<()> {
    api.users()
        .user_interactive_auth(UiaRequest {
            purpose: format!("{purpose}:{}", session.user_id),
            flows: vec![vec![AuthType::Password]],
            auth,
            user_id: Some(&session.user_id),
        })
        .await?;
    Ok(())
}

/// Registers a handler under every stable path (`r0` and `v3` alike) that
/// ruma knows for the request type `R`, with `R`'s method.
trait RouterExt {
    fn ruma<R: IncomingRequest, H: Handler<T, ClientApi>, T: 'static>(self, handler: H) -> Self;
    /// Also serves `R` where its last path parameter is empty: without it,
    /// and with a trailing slash (`/state/m.room.name`, `/state/m.room.name/`).
    fn ruma_empty_last<R: IncomingRequest, H: Handler<T, ClientApi>, T: 'static>(self, handler: H) -> Self;
}

impl RouterExt for Router<ClientApi> {
    fn ruma<R: IncomingRequest, H: Handler<T, ClientApi>, T: 'static>(mut self, handler: H) -> Self {
        let method = MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in stable_paths::<R>() {
            self = self.route(path, on(method, handler.clone()));
        }
        self
    }

    fn ruma_empty_last<R: IncomingRequest, H: Handler<T, ClientApi>, T: 'static>(mut self, handler: H) -> Self {
        let method = MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in stable_paths::<R>() {
            let (without, _) = path.rsplit_once('/').expect("ruma paths have segments");
            self = self.route(without, on(method, handler.clone()));
            self = self.route(&format!("{without}/"), on(method, handler.clone()));
        }
        self.ruma::<R, H, T>(handler)
    }
}

/// All client API routes, with their state.
pub fn router(api: ClientApi) -> Router {
    use ruma::api::client::{
        account as a, alias as al, device as d, directory as dir, discovery as disc, filter as f, membership as m,
        message as msg, profile as p, redact as red, room as r, session as s, state as st,
    };
    Router::new()
        .ruma::<disc::get_supported_versions::Request, _, _>(discovery::versions)
        .ruma::<disc::discover_homeserver::Request, _, _>(discovery::well_known)
        .ruma::<disc::get_capabilities::v3::Request, _, _>(discovery::capabilities)
        .ruma::<s::get_login_types::v3::Request, _, _>(session::login_types)
        .ruma::<s::login::v3::Request, _, _>(session::login)
        .ruma::<s::refresh_token::v3::Request, _, _>(session::refresh)
        .ruma::<s::logout::v3::Request, _, _>(session::logout)
        .ruma::<s::logout_all::v3::Request, _, _>(session::logout_all)
        .ruma::<a::register::v3::Request, _, _>(account::register)
        .ruma::<a::get_username_availability::v3::Request, _, _>(account::username_available)
        .ruma::<a::check_registration_token_validity::v1::Request, _, _>(account::registration_token_validity)
        .ruma::<a::whoami::v3::Request, _, _>(account::whoami)
        .ruma::<a::change_password::v3::Request, _, _>(account::change_password)
        .ruma::<a::deactivate::v3::Request, _, _>(account::deactivate)
        .ruma::<d::get_devices::v3::Request, _, _>(device::list)
        .ruma::<d::get_device::v3::Request, _, _>(device::get)
        .ruma::<d::update_device::v3::Request, _, _>(device::update)
        .ruma::<d::delete_device::v3::Request, _, _>(device::delete)
        .ruma::<d::delete_devices::v3::Request, _, _>(device::delete_many)
        .ruma::<p::get_profile::v3::Request, _, _>(profile::get_all)
        .ruma::<p::get_profile_field::v3::Request, _, _>(profile::get_field)
        .ruma::<p::set_profile_field::v3::Request, _, _>(profile::set_field)
        .ruma::<p::delete_profile_field::v3::Request, _, _>(profile::delete_field)
        .ruma::<f::create_filter::v3::Request, _, _>(filter::create)
        .ruma::<f::get_filter::v3::Request, _, _>(filter::get)
        .ruma::<r::create_room::v3::Request, _, _>(create_room::create_room)
        .ruma::<m::join_room_by_id_or_alias::v3::Request, _, _>(membership::join_by_id_or_alias)
        .ruma::<m::join_room_by_id::v3::Request, _, _>(membership::join_by_id)
        .ruma::<m::leave_room::v3::Request, _, _>(membership::leave)
        .ruma::<m::invite_user::v3::Request, _, _>(membership::invite)
        .ruma::<m::kick_user::v3::Request, _, _>(membership::kick)
        .ruma::<m::ban_user::v3::Request, _, _>(membership::ban)
        .ruma::<m::unban_user::v3::Request, _, _>(membership::unban)
        .ruma::<m::forget_room::v3::Request, _, _>(membership::forget)
        .ruma::<m::joined_rooms::v3::Request, _, _>(membership::joined)
        .ruma::<m::get_member_events::v3::Request, _, _>(membership::members)
        .ruma::<m::joined_members::v3::Request, _, _>(membership::joined_members_of)
        .ruma::<msg::send_message_event::v3::Request, _, _>(events::send)
        .ruma::<red::redact_event::v3::Request, _, _>(events::redact)
        .ruma::<r::get_room_event::v3::Request, _, _>(events::get_event)
        .ruma_empty_last::<st::send_state_event::v3::Request, _, _>(events::put_state)
        .ruma_empty_last::<st::get_state_event_for_key::v3::Request, _, _>(events::get_state)
        .ruma::<st::get_state_events::v3::Request, _, _>(events::get_all_state)
        .ruma::<ruma::api::client::sync::sync_events::v3::Request, _, _>(sync::sync)
        .ruma::<msg::get_message_events::v3::Request, _, _>(sync::messages)
        .ruma::<al::create_alias::v3::Request, _, _>(directory::set_alias)
        .ruma::<al::get_alias::v3::Request, _, _>(directory::get_alias)
        .ruma::<al::delete_alias::v3::Request, _, _>(directory::delete_alias)
        .ruma::<r::aliases::v3::Request, _, _>(directory::room_aliases)
        .ruma::<dir::get_room_visibility::v3::Request, _, _>(directory::get_visibility)
        .ruma::<dir::set_room_visibility::v3::Request, _, _>(directory::set_visibility)
        .ruma::<dir::get_public_rooms::v3::Request, _, _>(directory::public_rooms)
        .ruma::<dir::get_public_rooms_filtered::v3::Request, _, _>(directory::public_rooms_filtered)
        .with_state(api)
}
