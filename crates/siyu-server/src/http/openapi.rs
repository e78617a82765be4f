//! The OpenAPI document, generated from the handlers' annotations. Its paths come from
//! the router itself (`utoipa_axum`'s `routes!`), so an API route cannot be served
//! without being documented, nor documented without being served. (The WeCom callback,
//! `/metrics`, `/healthz` and this document itself are plain routes, outside the API.)

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Siyu", description = "Private-domain operations: tracking API (Segment spec) and admin API."),
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
        (name = "analytics", description = "The overview's figures: GMV and its four factors, the change by factor (LMDI), customers by day, rates; JSON and CSV."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("write_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
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

/// The document for the routes `paths` the router collected.
pub fn document(paths: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi().merge_from(paths);
    document_admin_errors(&mut doc);
    doc
}
