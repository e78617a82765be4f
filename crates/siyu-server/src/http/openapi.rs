//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{admin, org, outreach, segments, tokens, tracking, wecom};

#[derive(OpenApi)]
#[openapi(
    info(title = "Siyu", description = "Private-domain operations: tracking API (Segment spec) and admin API."),
    paths(
        tracking::identify, tracking::track, tracking::page, tracking::screen, tracking::group, tracking::alias, tracking::batch, tracking::import,
        admin::lookup, admin::profile, admin::events, admin::add_tag, admin::remove_tag, admin::stats, admin::ingest_status,
        org::list_stores, org::get_store, org::put_store, org::list_staff, org::get_staff, org::put_staff, org::remove_staff, org::staff_customers,
        tokens::create_token, tokens::list_tokens, tokens::revoke_token,
        segments::preview, segments::list, segments::create, segments::show, segments::update, segments::remove,
        segments::members, segments::export, segments::list_profiles,
        outreach::list_campaigns, outreach::create_campaign, outreach::show_campaign, outreach::update_campaign, outreach::preview_campaign,
        outreach::campaign_report, outreach::campaign_audit, outreach::campaign_action, outreach::list_journeys, outreach::put_journey,
        outreach::show_journey, outreach::profile_deliveries, outreach::list_tasks, outreach::show_task, outreach::resolve_item,
        outreach::completion, outreach::contact_policy, wecom::create_contact_way, wecom::list_contact_ways, wecom::start_sync, wecom::sync_progress, wecom::list_synced_tags, wecom::sync_tag, wecom::unsync_tag, wecom::request_transfer, wecom::list_transfers,
    ),
    modifiers(&Security),
    tags(
        (name = "tracking", description = "Segment-spec tracking API; the write key is the HTTP Basic user name."),
        (name = "profiles", description = "Customer profiles, identities, timelines and tags."),
        (name = "organisation", description = "Stores, staff and which guide serves which customer."),
        (name = "segments", description = "Live segments: rules in JSON or text form, counts, members, exports."),
        (name = "outreach", description = "Campaigns, journeys, the contact policy and every touch with why it was or was not sent."),
        (name = "wecom", description = "WeCom: live QR codes (contact ways). Callbacks arrive at /wecom/callback."),
        (name = "tokens", description = "API tokens for staff and admins: issue, list, revoke."),
        (name = "tasks", description = "Staff-mediated sending: each guide's tasks, confirmations, completion rates."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("write_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        document_admin_errors(openapi);
    }
}

/// Every admin operation can answer 401 (no or a wrong token) and 400 (a body, path or
/// query it cannot read), in the JSON error form: say so wherever a handler did not.
fn document_admin_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut().filter(|(p, _)| p.starts_with("/api/")) {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            responses.entry("401".into()).or_insert_with(|| error("no admin or staff token, or one that is not valid").into());
            responses.entry("400".into()).or_insert_with(|| error(&format!("the request to {path} could not be read: the message says what to fix")).into());
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
