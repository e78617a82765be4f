//! The Overview page: the period's private-domain customers, GMV with its four factors
//! and the change against the previous period by factor (LMDI), block and repurchase
//! rates, ARPU, and customers added and lost by day as a chart with its table. The
//! figures are the `/api/v1/analytics/overview` answer, for the viewer's scope.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use siyu_core::analytics::Factor;
use siyu_store::analytics::{DayContacts, Overview};

use super::{Chrome, Viewer, render};
use crate::http::App;
use crate::http::analytics::{AnalyticsQuery, Defs};
use crate::http::auth::Scope;

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    c: Chrome,
    q: Filters,
    query_string: String,
    kpis: Vec<Kpi>,
    factors: Vec<(String, String, String, String)>,
    decomposition_note: String,
    chart: String,
    days: Vec<(String, u64, u64, i64, u64)>,
}

/// The filter form as the viewer filled it in.
struct Filters {
    from: String,
    to: String,
    city: String,
    store: String,
    /// A store manager's figures are always their store's.
    store_fixed: bool,
    channel: String,
}

struct Kpi {
    label: &'static str,
    value: String,
    note: String,
}

fn yuan(fen: f64) -> String {
    format!("{:.2}", fen / 100.0)
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A change against the previous period, as a signed percentage.
fn change(current: f64, previous: f64) -> String {
    if previous == 0.0 { "–".into() } else { format!("{:+.1}%", (current / previous - 1.0) * 100.0) }
}

pub async fn page(State(app): State<App>, v: Viewer, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> Response {
    if let Scope::Guide(_) = v.scope {
        return Redirect::to("/console/tasks").into_response();
    }
    let overview = match crate::http::analytics::overview_for(&app, &v.scope, defs, &q).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let t = v.t();
    let filters = Filters {
        from: overview.period.from.to_string(),
        to: overview.period.to.to_string(),
        city: q.city.clone().unwrap_or_default(),
        // The store the figures are for: a manager's own, whatever the form asked.
        store: overview.slice.store.clone().unwrap_or_default(),
        store_fixed: matches!(v.scope, Scope::Store(_)),
        channel: q.channel.clone().unwrap_or_default(),
    };
    let query_string = format!(
        "from={}&to={}&city={}&store={}&channel={}",
        filters.from,
        filters.to,
        super::urlencoded(&filters.city),
        super::urlencoded(&filters.store),
        super::urlencoded(&filters.channel)
    );
    let page = OverviewPage {
        c: Chrome::new(&v, t.overview, "/console"),
        kpis: kpis(&v, &overview),
        factors: factors(&v, &overview),
        decomposition_note: overview.decomposition.note.clone().unwrap_or_default(),
        chart: chart(&overview.contacts.by_day, t),
        days: overview.contacts.by_day.iter().rev().map(|d| (d.day.to_string(), d.added, d.lost, d.net, d.total)).collect(),
        q: filters,
        query_string,
    };
    render(page)
}

fn kpis(v: &Viewer, o: &Overview) -> Vec<Kpi> {
    let t = v.t();
    let (cur, prev) = (&o.current, &o.previous);
    let vs = |c: f64, p: f64| format!("{} {}", t.vs_previous, change(c, p));
    vec![
        Kpi { label: t.private_customers, value: o.contacts.at_end.to_string(), note: format!("{} {}", t.net, o.contacts.net) },
        Kpi { label: t.new_customers, value: o.contacts.added.to_string(), note: String::new() },
        Kpi { label: t.lost_customers, value: o.contacts.lost.to_string(), note: String::new() },
        Kpi { label: t.gmv, value: yuan(cur.gmv_fen as f64), note: vs(cur.gmv_fen as f64, prev.gmv_fen as f64) },
        Kpi { label: t.buyers, value: cur.buyers.to_string(), note: vs(cur.buyers as f64, prev.buyers as f64) },
        Kpi { label: t.conversion, value: percent(cur.conversion), note: vs(cur.conversion, prev.conversion) },
        Kpi { label: t.aov, value: yuan(cur.aov_fen), note: vs(cur.aov_fen, prev.aov_fen) },
        Kpi { label: t.frequency, value: format!("{:.2}", cur.frequency), note: vs(cur.frequency, prev.frequency) },
        Kpi { label: t.block_rate, value: percent(o.block_rate.rate), note: format!("{}/{}", o.block_rate.blocked, o.block_rate.contacts) },
        Kpi { label: t.repurchase, value: percent(o.repurchase.rate), note: format!("{}/{}", o.repurchase.repeat_buyers, o.repurchase.buyers) },
        Kpi { label: t.arpu_private, value: yuan(o.arpu.private.arpu_fen), note: o.arpu.private.customers.to_string() },
        Kpi { label: t.arpu_rest, value: yuan(o.arpu.rest.arpu_fen), note: o.arpu.rest.customers.to_string() },
    ]
}

/// The four factors in each period and each one's share of the change, then GMV.
fn factors(v: &Viewer, o: &Overview) -> Vec<(String, String, String, String)> {
    let t = v.t();
    let shown = |f: Factor, x: f64| match f {
        Factor::Users => format!("{x:.0}"),
        Factor::Conversion => percent(x),
        Factor::Aov => yuan(x),
        Factor::Frequency => format!("{x:.3}"),
    };
    let label = |f: Factor| match f {
        Factor::Users => t.users,
        Factor::Conversion => t.conversion,
        Factor::Aov => t.aov,
        Factor::Frequency => t.frequency,
    };
    let d = &o.decomposition;
    let mut rows: Vec<(String, String, String, String)> = d
        .contributions
        .iter()
        .map(|c| (label(c.factor).to_string(), shown(c.factor, c.previous), shown(c.factor, c.current), format!("{:+.2}", c.fen as f64 / 100.0)))
        .collect();
    if rows.is_empty() {
        rows.push((t.no_decomposition.to_string(), String::new(), String::new(), String::new()));
    }
    rows.push((t.gmv.to_string(), yuan(d.previous_gmv_fen as f64), yuan(d.current_gmv_fen as f64), format!("{:+.2}", d.change_fen as f64 / 100.0)));
    rows
}

/// Customers added (up) and lost (down) each day, as an SVG drawn here: no script, no
/// chart library in the browser, a tooltip (`<title>`) on every bar.
fn chart(days: &[DayContacts], t: &super::i18n::Texts) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const PAD: f64 = 28.0;
    if days.is_empty() {
        return String::new();
    }
    let max = days.iter().map(|d| d.added.max(d.lost)).max().unwrap_or(0).max(1) as f64;
    let mid = H / 2.0;
    let scale = (mid - PAD) / max;
    let step = (W - PAD) / days.len() as f64;
    let bar = (step * 0.7).max(1.0);
    let mut svg = format!(
        r##"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{label}"><line x1="{PAD}" y1="{mid}" x2="{W}" y2="{mid}" stroke="#9ca3af" stroke-width="1"/><text x="0" y="14" font-size="11" fill="#6b7280">{max}</text><text x="0" y="{bottom}" font-size="11" fill="#6b7280">-{max}</text>"##,
        label = t.contacts_by_day,
        bottom = H - 18.0,
    );
    for (i, d) in days.iter().enumerate() {
        let x = PAD + i as f64 * step;
        let up = d.added as f64 * scale;
        let down = d.lost as f64 * scale;
        svg.push_str(&format!(
            r##"<g><title>{day}: {added_l} {added} · {lost_l} {lost} · {net_l} {net:+}</title><rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{up:.1}" fill="#0b7a5a"/><rect x="{x:.1}" y="{mid}" width="{bar:.1}" height="{down:.1}" fill="#d97706"/></g>"##,
            day = d.day,
            added_l = t.added,
            added = d.added,
            lost_l = t.lost,
            lost = d.lost,
            net_l = t.net,
            net = d.net,
            y = mid - up,
        ));
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        svg.push_str(&format!(
            r##"<text x="{PAD}" y="{H}" font-size="11" fill="#6b7280">{}</text><text x="{W}" y="{H}" font-size="11" fill="#6b7280" text-anchor="end">{}</text>"##,
            first.day, last.day
        ));
    }
    svg.push_str("</svg>");
    svg
}
