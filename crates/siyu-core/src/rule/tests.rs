use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::identity::IdentityKind;
use crate::time::Timestamp;

fn day(s: &str) -> Timestamp {
    Timestamp::parse_iso8601(s).unwrap()
}

#[test]
fn the_operators_question_parses() {
    // "Shanghai customers who ordered at least twice in the last 30 days, speak
    // Cantonese, are owned by a guide of store S12, and are not in the VIP segment".
    let r = parse(r#"city = "Shanghai" and count(Order Completed, 30d) >= 2 and tag = "说粤语" and owner.store = "S12" and not segment = "vip""#).unwrap();
    let Rule::And(items) = &r else { panic!("{r:?}") };
    assert_eq!(items.len(), 5);
    assert_eq!(
        items[1],
        Rule::Aggregate(AggregatePredicate {
            func: AggFn::Count,
            event: "Order Completed".into(),
            filters: vec![],
            measure: None,
            window: Window::Last(30 * 86_400_000),
            op: Op::Ge,
            value: Operand::One(Scalar::Num(2.0)),
        })
    );
    assert_eq!(r.segment_refs(), vec!["vip".to_string()]);
    assert!(r.depends_on_time());
    assert_eq!(r.to_string(), r#"city = "Shanghai" and count("Order Completed", 30d) >= 2 and tag = "说粤语" and owner.store = "S12" and not segment = "vip""#);
}

#[test]
fn every_predicate_kind_parses_and_prints_back() {
    let cases = [
        r#"age >= 30"#,
        r#"vip = true"#,
        r#"traits.stage = "gold""#,
        r#"city in ("Shanghai", "Beijing")"#,
        r#"name contains "王""#,
        r#"email exists"#,
        r#"birthday between date("1990-01-01") and date("1999-12-31")"#,
        r#"signup_at < ago(30d)"#,
        r#"tag != "vip""#,
        r#"has(wecom) and has(unionid) and has(phone)"#,
        r#"consent(sms)"#,
        r#"count("Order Completed" where category = "beans" and channel in ("pos", "mini_program"), 90d) >= 1"#,
        r#"count("Order Completed" where "in" = "store" and "pick up" exists) >= 1"#,
        r#"sum("Order Completed", revenue_fen, 30d) > 10000"#,
        r#"max("Order Completed", revenue_fen) >= 5000"#,
        r#"last("Order Completed") < ago(30d)"#,
        r#"first("Contact Added", since date("2026-01-01")) >= date("2026-03-01")"#,
        r#"count("Checked In", between date("2026-05-01") and date("2026-06-01")) = 0"#,
        r#"owner.city = "Shanghai" or owner.guide = "zhang.wei""#,
        r#"stage in ("repeat", "loyal")"#,
        r#"rfm.r >= 4 and rfm.f >= 4 and rfm.m between 3 and 5"#,
        r#"score.conversion >= 0.5"#,
        r#"not (city = "Shanghai" or city = "Beijing")"#,
        r#"(a = 1 or b = 2) and c = 3"#,
        r#"traits."favourite drink" = "oat latte""#,
    ];
    for text in cases {
        let r = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(r.to_string(), text, "canonical form");
        assert_eq!(Rule::from_json(&r.to_json()).unwrap(), r, "JSON round trip of {text}");
    }
}

#[test]
fn the_cli_example_reads_without_quotes() {
    let a = parse(r#"city = "Shanghai" and count(Order Completed, 30d) >= 2"#).unwrap();
    let b = parse(r#"city = 'Shanghai' AND COUNT("Order Completed", 30d) >= 2"#).unwrap();
    assert_eq!(a, b);
}

#[test]
fn errors_point_at_the_problem() {
    let cases = [
        (r#"city = "Shanghai" and"#, 22, "expected a condition"),
        (r#"city == Shanghai"#, 9, "quote text"),
        (r#"count(Order Completed, 30x) >= 2"#, 24, "not a duration"),
        (r#"sum(Order Completed, 30d) > 1"#, 1, "needs a numeric property"),
        (r#"last(Order Completed) > 5"#, 1, "is a time"),
        (r#"stage = "vip""#, 1, "not a lifecycle stage"),
        (r#"rfm.x >= 4"#, 1, "unknown RFM part"),
        (r#"rfm.r >= 9"#, 1, "quintile score from 1 to 5"),
        (r#"city in ()"#, 10, "the list is empty"),
        (r#"has(fax)"#, 5, "unknown"),
        (r#"(city = "a""#, 12, "closing )"),
        (r#"age between 30 and 20"#, 1, "smaller value first"),
        (r#"city = "unterminated"#, 8, "never closed"),
        (r#"tag > "a""#, 1, "tag cannot use >"),
    ];
    for (text, column, needle) in cases {
        match parse(text) {
            Err(RuleError::Text { message, column: c, .. }) => {
                assert!(message.contains(needle), "{text}: {message}");
                assert_eq!(c, column, "{text}: {message}");
            }
            other => panic!("{text}: expected an error, got {other:?}"),
        }
    }
    let shown = parse("city = Shanghai").unwrap_err().to_string();
    assert!(shown.contains("city = Shanghai\n         ^"), "{shown}");
}

#[test]
fn json_errors_name_the_path() {
    let cases = [
        (json!({"and": [{"field": "traits.city", "op": "=", "value": "a"}, {"field": "traits.age", "op": "≥", "value": 3}]}), "rule.and[1].op"),
        (json!({"or": []}), "rule.or"),
        (json!({"not": {"has": "fax"}}), "rule.not.has"),
        (json!({"aggregate": "count", "event": "X", "window": "30 days", "op": ">=", "value": 1}), "rule.window"),
        (json!({"aggregate": "count", "event": "X", "where": [{"property": "a", "op": "in", "value": "x"}], "op": ">", "value": 1}), "rule.where[0].value"),
        (json!({"field": "stage", "op": "=", "value": "gold"}), "rule"),
        (json!({"field": "traits.x", "op": "=", "value": {"date": "tomorrow"}}), "rule.value.date"),
        (json!({"field": "traits.x", "op": "=", "value": 1, "extra": true}), "rule.extra"),
        (json!(["city"]), "rule"),
    ];
    for (rule, path) in cases {
        match Rule::from_json(&rule) {
            Err(RuleError::Json { path: p, message }) => assert_eq!(p, path, "{rule}: {message}"),
            other => panic!("{rule}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn json_form_example() {
    let r = Rule::from_json(&json!({"and": [
        {"field": "traits.city", "op": "=", "value": "Shanghai"},
        {"aggregate": "count", "event": "Order Completed", "where": [{"property": "properties.category", "op": "=", "value": "beans"}],
         "window": "30d", "op": ">=", "value": 2},
        {"has": "wecom"},
        {"field": "traits.signup_at", "op": ">=", "value": {"date": "2026-01-01"}}
    ]}))
    .unwrap();
    assert_eq!(
        r.to_string(),
        r#"city = "Shanghai" and count("Order Completed" where category = "beans", 30d) >= 2 and has(wecom) and signup_at >= date("2026-01-01")"#
    );
    assert_eq!(Rule::Has(Presence::Identity(IdentityKind::Phone)).to_string(), "has(phone)");
    assert_eq!(Window::Between(day("2026-01-01"), day("2026-02-01")).range(Timestamp(0)).0, day("2026-01-01").0);
}

fn arb_str() -> impl Strategy<Value = String> {
    prop_oneof![Just("Shanghai".to_string()), Just("说粤语".to_string()), Just("a \"quoted\" \\ word".to_string()), "[a-z]{1,6}"]
}

fn arb_scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        arb_str().prop_map(Scalar::Str),
        (-1000i64..1000).prop_map(|n| Scalar::Num(n as f64 / 4.0)),
        any::<bool>().prop_map(Scalar::Bool),
        (0i64..20_000).prop_map(|d| Scalar::Date(Timestamp(d * 86_400_000))),
        (1i64..400).prop_map(|d| Scalar::Ago(d * 3_600_000)),
    ]
}

fn arb_condition() -> impl Strategy<Value = (Op, Operand)> {
    prop_oneof![
        (prop_oneof![Just(Op::Eq), Just(Op::Ne), Just(Op::Lt), Just(Op::Le), Just(Op::Gt), Just(Op::Ge)], arb_scalar())
            .prop_map(|(op, s)| (op, Operand::One(s))),
        prop::collection::vec(arb_scalar(), 1..4).prop_map(|v| (Op::In, Operand::List(v))),
        arb_str().prop_map(|s| (Op::Contains, Operand::One(Scalar::Str(s)))),
        Just((Op::Exists, Operand::None)),
        (0i64..100, 0i64..100).prop_map(|(a, b)| (Op::Between, Operand::Range(Scalar::Num(a.min(b) as f64), Scalar::Num(a.max(b) as f64)))),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Rule> {
    prop_oneof![
        ("[a-z][a-z_]{0,5}", arb_condition()).prop_map(|(t, (op, value))| Rule::Field(FieldPredicate { field: Field::Trait(t), op, value })),
        ("[a-z]{1,4}", arb_condition()).prop_map(|(t, (op, value))| Rule::Field(FieldPredicate { field: Field::Trait(format!("odd key {t}")), op, value })),
        arb_str().prop_map(|t| Rule::Field(FieldPredicate { field: Field::Tag, op: Op::Eq, value: Operand::One(Scalar::Str(t)) })),
        (1u8..=5).prop_map(|n| Rule::Field(FieldPredicate { field: Field::Rfm(RfmPart::Frequency), op: Op::Ge, value: Operand::One(Scalar::Num(n as f64)) })),
        prop::sample::select(Stage::ALL.to_vec()).prop_map(|s| Rule::Field(FieldPredicate {
            field: Field::Stage,
            op: Op::Eq,
            value: Operand::One(Scalar::Str(s.as_str().into()))
        })),
        Just(Rule::Has(Presence::Wecom)),
        Just(Rule::Consent(Channel::Sms)),
        (
            prop::sample::select(AggFn::ALL.to_vec()),
            prop_oneof![Just("Order Completed".to_string()), Just("and".to_string()), "[A-Z][a-z]{2,6}"],
            prop::collection::vec(("[a-z]{1,5}", arb_condition()).prop_map(|(path, (op, value))| PropertyFilter { path, op, value }), 0..3),
            prop_oneof![
                Just(Window::Ever),
                (1i64..100).prop_map(|d| Window::Last(d * 86_400_000)),
                (0i64..1000).prop_map(|d| Window::Since(Timestamp(d * 86_400_000))),
                (0i64..1000, 0i64..50).prop_map(|(d, n)| Window::Between(Timestamp(d * 86_400_000), Timestamp((d + n) * 86_400_000))),
            ],
            0i64..50,
        )
            .prop_map(|(func, event, filters, window, n)| {
                let value = if func.yields_time() { Scalar::Ago(n * 86_400_000 + 60_000) } else { Scalar::Num(n as f64) };
                let measure = func.needs_measure().then(|| "revenue_fen".to_string());
                Rule::Aggregate(AggregatePredicate { func, event, filters, measure, window, op: Op::Ge, value: Operand::One(value) })
            }),
    ]
    .prop_filter("valid", |r| match r {
        Rule::Field(p) => validate::field(p).is_ok(),
        Rule::Aggregate(a) => validate::aggregate(a).is_ok(),
        _ => true,
    })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    arb_leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Rule::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Rule::Or),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

/// Nested `and`s print flat (`a and (b and c)` is `a and b and c`), so compare shapes
/// after flattening.
fn flatten(r: Rule) -> Rule {
    match r {
        Rule::And(items) => Rule::And(items.into_iter().map(flatten).flat_map(|i| if let Rule::And(x) = i { x } else { vec![i] }).collect()),
        Rule::Or(items) => Rule::Or(items.into_iter().map(flatten).flat_map(|i| if let Rule::Or(x) = i { x } else { vec![i] }).collect()),
        Rule::Not(inner) => Rule::Not(Box::new(flatten(*inner))),
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn text_and_json_forms_convert_into_each_other(rule in arb_rule()) {
        let text = rule.to_string();
        let reparsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(flatten(reparsed.clone()), flatten(rule.clone()), "text: {}", text);
        let from_json = Rule::from_json(&rule.to_json()).map_err(|e| TestCaseError::fail(format!("{}\n{e}", rule.to_json())))?;
        prop_assert_eq!(&from_json, &rule);
        prop_assert_eq!(from_json.to_string(), text);
    }
}

/// A chain of `depth` connectives around one leaf: not, and, or in turn.
fn nested(depth: usize) -> Rule {
    let leaf = parse(r#"city = "Shanghai""#).unwrap();
    (0..depth).fold(leaf, |inner, i| match i % 3 {
        0 => Rule::Not(Box::new(inner)),
        1 => Rule::And(vec![parse("tag = \"vip\"").unwrap(), inner]),
        _ => Rule::Or(vec![inner, parse("has(wecom)").unwrap()]),
    })
}

#[test]
fn deep_nesting_is_refused_with_its_position_not_a_crash() {
    // What the issue saw abort the server: 4,000 nots and 1,400 parentheses.
    let nots = format!("{}city = \"x\"", "not ".repeat(4_000));
    match parse(&nots) {
        Err(RuleError::Text { message, column, .. }) => {
            assert!(message.contains("at most 32"), "{message}");
            assert_eq!(column, 4 * MAX_DEPTH + 1, "points at the first not too many");
        }
        other => panic!("{other:?}"),
    }
    let parens = format!("{}city = \"x\"{}", "(".repeat(1_400), ")".repeat(1_400));
    assert!(matches!(parse(&parens), Err(RuleError::Text { column: 33, .. })));
    // The JSON form: a tree built in memory (serde_json itself stops at 128 levels).
    let deep = (0..500).fold(serde_json::json!({"field": "traits.city", "op": "exists"}), |inner, _| serde_json::json!({ "not": inner }));
    match Rule::from_json(&deep) {
        Err(RuleError::Json { path, message }) => {
            assert!(message.contains("at most 32"), "{message}");
            assert_eq!(path, format!("rule{}", ".not".repeat(MAX_DEPTH + 1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_deepest_accepted_rule_reads_back_in_both_forms() {
    let rule = nested(MAX_DEPTH);
    let stored = serde_json::to_string(&rule.to_json()).unwrap();
    // What the store keeps must be readable by serde_json's default limits.
    let value: serde_json::Value = serde_json::from_str(&stored).expect("stored JSON reads back");
    let back = Rule::from_json(&value).expect("JSON form reads back");
    assert_eq!(back, rule);
    let text = rule.to_string();
    assert_eq!(flatten(parse(&text).expect("text form reads back")), flatten(rule));
    assert!(Rule::from_json(&nested(MAX_DEPTH + 1).to_json()).is_err());
}

fn arb_noise() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("(".to_string()),
        Just(")".to_string()),
        Just("not ".to_string()),
        Just(" and ".to_string()),
        Just(" or ".to_string()),
        Just("city = \"x\"".to_string()),
        Just("count(Order Completed, 30d) >= ".to_string()),
        Just("\"".to_string()),
        Just("[".to_string()),
        "[a-z0-9 =<>!,.'\"()\\[\\]\\\\-]{0,6}",
    ];
    prop::collection::vec(token, 0..300).prop_map(|t| t.concat())
}

fn arb_json_noise() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!({"field": "traits.city", "op": "=", "value": "x"})),
        Just(json!({"has": "wecom"})),
        Just(json!(null)),
        Just(json!([])),
        Just(json!({"aggregate": "count", "event": "X", "op": ">=", "value": 1})),
        "[a-z]{0,4}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(80, 400, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|r| json!({ "not": r })),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({ "and": v })),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({ "or": v })),
            inner.prop_map(|r| json!({ "not": r, "extra": 1 })),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Random and deeply nested input never panics either parser; what parses prints
    /// back to something that parses again.
    #[test]
    fn parsers_never_panic(text in arb_noise(), deep in 0usize..3_000, json in arb_json_noise()) {
        if let Ok(rule) = parse(&text) {
            prop_assert!(parse(&rule.to_string()).is_ok(), "{}", rule);
        }
        let _ = parse(&format!("{}{text}", "not (".repeat(deep)));
        if let Ok(rule) = Rule::from_json(&json) {
            prop_assert!(Rule::from_json(&rule.to_json()).is_ok());
        }
    }
}
