//! The OpenAPI 3.1 document (`GET /openapi.json`), generated from the handlers'
//! annotations, and a page for people (`GET /docs`) rendered from the same document on
//! the server: no script and nothing fetched from elsewhere.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::Modify;

use super::State;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ledger HTTP API",
        description = "Users, payment methods, wallets, payments, statements and exchange over HTTP/JSON. \
Every call but sign-up and sign-in carries `Authorization: Bearer <token>` (a session token from \
`POST /user/sessions`, or a role token). Amounts are decimal strings in the currency's major unit \
(`\"12.50\"`), times RFC 3339 in UTC. Creating requests take an `Idempotency-Key` header. Lists are \
cursor-paged (`limit`, `starting_after` = the previous page's `next_cursor`). Every error answers \
`{\"error\": {\"code\", \"message\", \"field\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(super::error::ErrorBody, super::error::ErrorObject))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document as served: every operation also documents a `default` answer, the
/// error shape, because any call can meet the errors every route shares (a body too
/// large or not JSON, a throttle, an unavailable log, a timeout) besides its own.
pub fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let error = ResponseBuilder::new()
        .description("An error: `{\"error\": {\"code\", \"message\", \"field\"}}`")
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build();
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(error.clone()));
        }
    }
    document
}

pub fn routes(document: &utoipa::openapi::OpenApi) -> Result<axum::Router<State>, String> {
    let json = serde_json::to_string_pretty(document).map_err(|e| format!("the OpenAPI document: {e}"))?;
    let value: Value = serde_json::from_str(&json).map_err(|e| format!("the OpenAPI document: {e}"))?;
    let (json, page) = (Arc::new(json), Arc::new(docs_page(&value)));
    Ok(axum::Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json.as_str().to_owned()).into_response() }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move {
                    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.as_str().to_owned()).into_response()
                }
            }),
        ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn schema_name(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_string();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!("[{}]", schema.get("items").map(schema_name).unwrap_or_default()),
        Some(kind) => kind.to_string(),
        None => "object".into(),
    }
}

/// One HTML page: every operation (method, path, summary, parameters, body, answers),
/// then every schema with its fields.
pub fn docs_page(document: &Value) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ledger HTTP API</title><style>\
         body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}\
         code,pre{background:#f4f4f4;padding:0 .2em}h3{margin-bottom:.2em}.m{font-weight:bold;text-transform:uppercase}\
         table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}</style></head><body>",
    );
    let info = &document["info"];
    out.push_str(&format!(
        "<h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p><h2>Operations</h2>",
        escape(info["title"].as_str().unwrap_or("API")),
        escape(info["version"].as_str().unwrap_or("")),
        escape(info["description"].as_str().unwrap_or("")),
        escape(document["openapi"].as_str().unwrap_or("")),
    ));
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, op) in item {
                out.push_str(&format!(
                    "<h3 id=\"{}\"><span class=\"m\">{}</span> <code>{}</code></h3><p>{}</p>",
                    escape(op["operationId"].as_str().unwrap_or("")),
                    escape(method),
                    escape(path),
                    escape(op["summary"].as_str().or(op["description"].as_str()).unwrap_or("")),
                ));
                if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                    out.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>");
                    for p in params {
                        out.push_str(&format!(
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            escape(p["name"].as_str().unwrap_or("")),
                            escape(p["in"].as_str().unwrap_or("")),
                            escape(&schema_name(&p["schema"])),
                            escape(p["description"].as_str().unwrap_or("")),
                        ));
                    }
                    out.push_str("</table>");
                }
                if let Some(body) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
                    let name = schema_name(&Value::Object(body.clone()));
                    out.push_str(&format!("<p>Body: <a href=\"#schema-{0}\"><code>{0}</code></a></p>", escape(&name)));
                }
                if let Some(responses) = op["responses"].as_object() {
                    out.push_str("<ul>");
                    for (code, answer) in responses {
                        let schema = answer["content"]["application/json"]["schema"].clone();
                        let name = if schema.is_null() { String::new() } else { schema_name(&schema) };
                        out.push_str(&format!(
                            "<li><code>{}</code> {} <code>{}</code></li>",
                            escape(code),
                            escape(answer["description"].as_str().unwrap_or("")),
                            escape(&name)
                        ));
                    }
                    out.push_str("</ul>");
                }
            }
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = document["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            out.push_str(&format!("<h3 id=\"schema-{0}\"><code>{0}</code></h3>", escape(name)));
            if let Some(about) = schema["description"].as_str() {
                out.push_str(&format!("<p>{}</p>", escape(about)));
            }
            if let Some(fields) = schema["properties"].as_object() {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>about</th></tr>");
                for (field, s) in fields {
                    out.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(field),
                        escape(&schema_name(s)),
                        if required.contains(&field.as_str()) { "yes" } else { "" },
                        escape(s["description"].as_str().unwrap_or("")),
                    ));
                }
                out.push_str("</table>");
            }
        }
    }
    out.push_str("</body></html>");
    out
}
