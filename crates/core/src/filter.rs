//! Payload filters: whether an event goes to a webhook at all, decided over the body its
//! receiver would get (`{"id", "type", "account_id", "timestamp", "data"}`).
//!
//! The syntax is the MongoDB-style one Convoy and Outpost share, so filters written for
//! either read the same here:
//!
//! ```json
//! {"data.status": {"$in": ["read", "delivered"]}, "data.amount": {"$gte": 100}}
//! ```
//!
//! - The keys of an object are all required (an implicit `$and`); a key is a dotted path into
//!   the body, or `$and` / `$or` (a non-empty list of filters) or `$not` (a filter).
//! - A path's value is a plain value (`$eq`) or an object of operators, all required:
//!   `$eq $neq $gt $gte $lt $lte $in $nin $exist $regex`, and `$not` over such an object.
//! - A path that meets an array goes on into each element, and matches if any does; a value
//!   that is an array matches a test if the array itself or any element does. `$neq` and
//!   `$nin` are the exact negations of `$eq` and `$in`: they match when no value equals, an
//!   absent field included.
//! - Numbers compare as numbers (`1` equals `1.0`); `$gt` and the rest compare numbers with
//!   numbers and strings with strings (by code point), and nothing else.
//!
//! A filter is checked and compiled once, when saved, and matched in memory: the sizes below
//! bound the work of a match, and regular expressions are compiled with a size limit by a
//! linear-time engine, so no filter can make the fan-out slow.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use crate::Invalid;

/// The bytes of a filter at most, as JSON.
pub const MAX_FILTER_BYTES: usize = 8 * 1024;
/// Tests (one per operator or plain value) in a filter at most.
pub const MAX_FILTER_TESTS: usize = 64;
/// How deep `$and`, `$or` and `$not` may nest.
pub const MAX_FILTER_DEPTH: usize = 8;
/// Segments of a dotted path at most.
pub const MAX_PATH_SEGMENTS: usize = 16;
/// Values in one `$in` or `$nin` at most.
pub const MAX_IN_VALUES: usize = 256;
/// Characters of a `$regex` pattern at most.
pub const MAX_REGEX_CHARS: usize = 512;
/// `$regex` tests in a filter at most: every process holds every webhook's filters compiled.
pub const MAX_REGEXES: usize = 4;
/// The memory a compiled `$regex` may take, and its matching cache: a pattern such as
/// `(a{100}){100}` is refused. With [`MAX_REGEXES`], a filter's patterns hold at most half a
/// MiB, whatever an account writes.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// A checked, compiled filter. It keeps the JSON it was made from, which is what is stored
/// and shown.
#[derive(Clone)]
pub struct Filter {
    source: Value,
    root: Node,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[derive(Clone, Debug)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Field { path: Vec<String>, test: Test },
}

#[derive(Clone, Debug)]
enum Test {
    All(Vec<Test>),
    Not(Box<Test>),
    Eq(Value),
    Neq(Value),
    Compare(Ordering, bool, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exist(bool),
    Regex(regex::Regex),
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid::new("invalid_filter", message)
}

impl Filter {
    /// Checks and compiles `source`; the error says what is wrong and where.
    pub fn parse(source: &Value) -> Result<Self, Invalid> {
        let bytes = serde_json::to_vec(source).map_or(usize::MAX, |b| b.len());
        if bytes > MAX_FILTER_BYTES {
            return Err(invalid(format!(
                "a filter is at most {MAX_FILTER_BYTES} bytes of JSON ({bytes} given)"
            )));
        }
        let mut budget = Budget {
            tests: 0,
            regexes: 0,
        };
        let root = budget.filter(source, 0, "the filter")?;
        Ok(Self {
            source: source.clone(),
            root,
        })
    }

    pub fn as_json(&self) -> &Value {
        &self.source
    }

    /// Whether `body` (the body a receiver would get) passes.
    pub fn matches(&self, body: &Value) -> bool {
        self.root.matches(body)
    }
}

struct Budget {
    tests: usize,
    regexes: usize,
}

impl Budget {
    fn count(&mut self, at: &str) -> Result<(), Invalid> {
        self.tests += 1;
        if self.tests > MAX_FILTER_TESTS {
            return Err(invalid(format!(
                "a filter holds at most {MAX_FILTER_TESTS} tests (too many at {at})"
            )));
        }
        Ok(())
    }

    /// A filter object: paths and `$and`, `$or`, `$not`, all required.
    fn filter(&mut self, value: &Value, depth: usize, at: &str) -> Result<Node, Invalid> {
        if depth > MAX_FILTER_DEPTH {
            return Err(invalid(format!(
                "`$and`, `$or` and `$not` nest at most {MAX_FILTER_DEPTH} deep"
            )));
        }
        let Value::Object(object) = value else {
            return Err(invalid(format!("{at} must be an object")));
        };
        if object.is_empty() && depth > 0 {
            return Err(invalid(format!("{at} is empty")));
        }
        let mut nodes = Vec::with_capacity(object.len());
        for (key, value) in object {
            nodes.push(match key.as_str() {
                "$and" | "$or" => {
                    let Value::Array(items) = value else {
                        return Err(invalid(format!("`{key}` takes a list of filters")));
                    };
                    if items.is_empty() {
                        return Err(invalid(format!("`{key}` takes at least one filter")));
                    }
                    let children = items
                        .iter()
                        .map(|item| {
                            self.filter(item, depth + 1, &format!("each filter of `{key}`"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "$and" {
                        Node::All(children)
                    } else {
                        Node::Any(children)
                    }
                }
                "$not" => Node::Not(Box::new(self.filter(value, depth + 1, "`$not`")?)),
                op if op.starts_with('$') => {
                    return Err(invalid(format!(
                        "unknown operator `{op}` where a path or `$and`, `$or`, `$not` was expected"
                    )))
                }
                path => Node::Field {
                    path: parse_path(path)?,
                    test: self.field(value, depth, path)?,
                },
            });
        }
        Ok(match nodes.len() {
            1 => nodes.pop().unwrap_or(Node::All(Vec::new())),
            _ => Node::All(nodes),
        })
    }

    /// What a path's value must satisfy: a plain value, or an object of operators.
    fn field(&mut self, value: &Value, depth: usize, path: &str) -> Result<Test, Invalid> {
        let operators = match value {
            Value::Object(object) if object.keys().any(|k| k.starts_with('$')) => object,
            plain => {
                self.count(path)?;
                return Ok(Test::Eq(plain.clone()));
            }
        };
        if depth > MAX_FILTER_DEPTH {
            return Err(invalid(format!(
                "`$and`, `$or` and `$not` nest at most {MAX_FILTER_DEPTH} deep"
            )));
        }
        let mut tests = Vec::with_capacity(operators.len());
        for (op, operand) in operators {
            self.count(path)?;
            let at = || format!("`{op}` at `{path}`");
            tests.push(match op.as_str() {
                "$eq" => Test::Eq(operand.clone()),
                "$neq" => Test::Neq(operand.clone()),
                "$gt" | "$gte" | "$lt" | "$lte" => {
                    if !(operand.is_number() || operand.is_string()) {
                        return Err(invalid(format!("{} takes a number or a string", at())));
                    }
                    let (ordering, or_equal) = match op.as_str() {
                        "$gt" => (Ordering::Greater, false),
                        "$gte" => (Ordering::Greater, true),
                        "$lt" => (Ordering::Less, false),
                        _ => (Ordering::Less, true),
                    };
                    Test::Compare(ordering, or_equal, operand.clone())
                }
                "$in" | "$nin" => {
                    let Value::Array(values) = operand else {
                        return Err(invalid(format!("{} takes a list of values", at())));
                    };
                    if values.len() > MAX_IN_VALUES {
                        return Err(invalid(format!(
                            "{} takes at most {MAX_IN_VALUES} values",
                            at()
                        )));
                    }
                    if op == "$in" {
                        Test::In(values.clone())
                    } else {
                        Test::Nin(values.clone())
                    }
                }
                "$exist" => match operand {
                    Value::Bool(wanted) => Test::Exist(*wanted),
                    _ => return Err(invalid(format!("{} takes true or false", at()))),
                },
                "$regex" => {
                    self.regexes += 1;
                    if self.regexes > MAX_REGEXES {
                        return Err(invalid(format!(
                            "a filter holds at most {MAX_REGEXES} `$regex` tests (too many at `{path}`)"
                        )));
                    }
                    let Value::String(pattern) = operand else {
                        return Err(invalid(format!("{} takes a pattern (a string)", at())));
                    };
                    Test::Regex(compile_regex(pattern).map_err(|e| {
                        invalid(format!("{} is not a usable pattern: {e}", at()))
                    })?)
                }
                "$not" => Test::Not(Box::new(match operand {
                    Value::Object(inner) if !inner.is_empty() && inner.keys().all(|k| k.starts_with('$')) => {
                        self.field(operand, depth + 1, path)?
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{} takes an object of operators, such as {{\"$eq\": 1}}",
                            at()
                        )))
                    }
                })),
                unknown => {
                    return Err(invalid(format!(
                        "unknown operator `{unknown}` at `{path}`; known: $eq $neq $gt $gte $lt $lte $in $nin $exist $regex $not"
                    )))
                }
            });
        }
        Ok(match tests.len() {
            1 => tests.pop().unwrap_or(Test::All(Vec::new())),
            _ => Test::All(tests),
        })
    }
}

fn parse_path(path: &str) -> Result<Vec<String>, Invalid> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(invalid(format!(
            "`{path}` is not a path: segments are separated by single dots"
        )));
    }
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(invalid(format!(
            "`{path}` is deeper than {MAX_PATH_SEGMENTS} segments"
        )));
    }
    Ok(segments)
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    let chars = pattern.chars().count();
    if chars > MAX_REGEX_CHARS {
        return Err(format!(
            "it is {chars} characters, more than {MAX_REGEX_CHARS}"
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "it would compile too big".to_owned(),
            other => other.to_string(),
        })
}

impl Node {
    fn matches(&self, body: &Value) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.matches(body)),
            Node::Any(nodes) => nodes.iter().any(|n| n.matches(body)),
            Node::Not(node) => !node.matches(body),
            Node::Field { path, test } => {
                let mut found = Vec::new();
                resolve(body, path, &mut found);
                test.matches(&found)
            }
        }
    }
}

/// The values at `path` in `value`, going into every element of each array met.
fn resolve<'a>(value: &'a Value, path: &[String], found: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        found.push(value);
        return;
    };
    match value {
        Value::Object(object) => {
            if let Some(next) = object.get(first) {
                resolve(next, rest, found);
            }
        }
        Value::Array(items) => {
            // `items.0` names an element; any other segment goes on in each element.
            if let Ok(index) = first.parse::<usize>() {
                if let Some(item) = items.get(index) {
                    resolve(item, rest, found);
                }
            } else {
                for item in items {
                    resolve(item, path, found);
                }
            }
        }
        _ => {}
    }
}

impl Test {
    /// Whether the values found at a path pass: `found` is empty when the path is absent.
    fn matches(&self, found: &[&Value]) -> bool {
        match self {
            Test::All(tests) => tests.iter().all(|t| t.matches(found)),
            Test::Not(test) => !test.matches(found),
            Test::Exist(wanted) => found.is_empty() != *wanted,
            Test::Eq(wanted) => any(found, |v| equal(v, wanted)),
            Test::Neq(wanted) => !any(found, |v| equal(v, wanted)),
            Test::In(values) => any(found, |v| values.iter().any(|w| equal(v, w))),
            Test::Nin(values) => !any(found, |v| values.iter().any(|w| equal(v, w))),
            Test::Compare(ordering, or_equal, bound) => any(found, |v| {
                compare(v, bound).is_some_and(|o| o == *ordering || (*or_equal && o.is_eq()))
            }),
            Test::Regex(regex) => any(found, |v| v.as_str().is_some_and(|s| regex.is_match(s))),
        }
    }
}

/// Whether any value found, or for an array any of its elements, passes `test`.
fn any(found: &[&Value], test: impl Fn(&Value) -> bool) -> bool {
    found
        .iter()
        .any(|value| test(value) || matches!(value, Value::Array(items) if items.iter().any(&test)))
}

/// JSON equality, numbers by value: `1` equals `1.0`.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b).is_some_and(Ordering::is_eq),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => objects_equal(xs, ys),
        _ => a == b,
    }
}

fn objects_equal(xs: &Map<String, Value>, ys: &Map<String, Value>) -> bool {
    xs.len() == ys.len()
        && xs
            .iter()
            .all(|(k, x)| ys.get(k).is_some_and(|y| equal(x, y)))
}

/// Numbers exactly while both are integers (past 2^53 a float would take two apart as
/// equal), as floats once either is one.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let whole = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            if let (Some(x), Some(y)) = (whole(x), whole(y)) {
                return Some(x.cmp(&y));
            }
            x.as_f64()?.partial_cmp(&y.as_f64()?)
        }
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({
            "id": "evt_1",
            "type": "Message.received",
            "account_id": "acc_1",
            "timestamp": "2026-12-07T10:00:00Z",
            "data": {
                "status": "read",
                "amount": 150,
                "price": 9.5,
                "note": null,
                "tags": ["vip", "new"],
                "items": [{"sku": "a1", "qty": 1}, {"sku": "b2", "qty": 5}],
                "customer": {"email": "ann@example.com", "address": {"country": "FR"}}
            }
        })
    }

    fn passes(filter: Value) -> bool {
        Filter::parse(&filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&body())
    }

    fn passes_compile(pattern: &str) -> bool {
        Filter::parse(&json!({"data.x": {"$regex": pattern}})).is_ok()
    }

    fn refused(filter: Value) -> String {
        match Filter::parse(&filter) {
            Ok(_) => panic!("{filter} was accepted"),
            Err(e) => {
                assert_eq!(e.code, "invalid_filter");
                e.message
            }
        }
    }

    #[test]
    fn each_operator_matches_and_refuses() {
        let cases = [
            (json!({"data.status": "read"}), true),
            (json!({"data.status": "sent"}), false),
            (json!({"data.status": {"$eq": "read"}}), true),
            (json!({"data.status": {"$neq": "read"}}), false),
            (json!({"data.status": {"$neq": "sent"}}), true),
            (json!({"data.missing": {"$neq": "sent"}}), true),
            (json!({"data.amount": {"$gt": 100}}), true),
            (json!({"data.amount": {"$gt": 150}}), false),
            (json!({"data.amount": {"$gte": 150}}), true),
            (json!({"data.amount": {"$lt": 150}}), false),
            (json!({"data.amount": {"$lte": 150.0}}), true),
            (json!({"data.price": {"$gt": 9, "$lt": 10}}), true),
            (json!({"data.price": {"$gt": 9, "$lt": 9.25}}), false),
            (json!({"data.status": {"$gt": "q"}}), true),
            (json!({"data.status": {"$gt": 1}}), false),
            (json!({"data.status": {"$in": ["read", "delivered"]}}), true),
            (json!({"data.status": {"$in": ["sent"]}}), false),
            (json!({"data.status": {"$nin": ["sent"]}}), true),
            (json!({"data.status": {"$nin": ["read"]}}), false),
            (json!({"data.note": {"$exist": true}}), true),
            (json!({"data.missing": {"$exist": true}}), false),
            (json!({"data.missing": {"$exist": false}}), true),
            (
                json!({"data.customer.email": {"$regex": "@example\\.com$"}}),
                true,
            ),
            (json!({"data.customer.email": {"$regex": "^bob"}}), false),
            (json!({"data.amount": {"$regex": "150"}}), false),
            (json!({"data.status": {"$not": {"$eq": "read"}}}), false),
            (json!({"data.status": {"$not": {"$in": ["sent"]}}}), true),
            (
                json!({"$and": [{"data.status": "read"}, {"data.amount": 150}]}),
                true,
            ),
            (
                json!({"$and": [{"data.status": "read"}, {"data.amount": 1}]}),
                false,
            ),
            (
                json!({"$or": [{"data.status": "sent"}, {"data.amount": 150}]}),
                true,
            ),
            (
                json!({"$or": [{"data.status": "sent"}, {"data.amount": 1}]}),
                false,
            ),
            (json!({"$not": {"data.status": "sent"}}), true),
            (
                json!({"type": "Message.received", "account_id": "acc_1"}),
                true,
            ),
            (json!({}), true),
        ];
        for (filter, expected) in cases {
            assert_eq!(passes(filter.clone()), expected, "{filter}");
        }
    }

    #[test]
    fn paths_go_into_nested_objects_and_every_array_element() {
        assert!(passes(json!({"data.customer.address.country": "FR"})));
        assert!(!passes(json!({"data.customer.address.country": "DE"})));
        // Any element of an array at the end of the path...
        assert!(passes(json!({"data.tags": "vip"})));
        assert!(passes(json!({"data.tags": {"$in": ["new", "old"]}})));
        assert!(!passes(json!({"data.tags": {"$nin": ["new"]}})));
        // ...or the array itself,
        assert!(passes(json!({"data.tags": ["vip", "new"]})));
        // ...or met on the way.
        assert!(passes(json!({"data.items.sku": "b2"})));
        assert!(passes(json!({"data.items.qty": {"$gte": 5}})));
        assert!(!passes(json!({"data.items.qty": {"$gt": 5}})));
        assert!(passes(json!({"data.items.0.sku": "a1"})));
        assert!(!passes(json!({"data.items.1.sku": "a1"})));
        // Nothing to find under a string.
        assert!(!passes(json!({"data.status.length": {"$exist": true}})));
    }

    #[test]
    fn numbers_compare_by_value() {
        let big = json!({"data": {"id": 9_007_199_254_740_993_u64}});
        let filter = |f: Value| Filter::parse(&f).unwrap();
        assert!(!filter(json!({"data.id": 9_007_199_254_740_992_u64})).matches(&big));
        assert!(filter(json!({"data.id": 9_007_199_254_740_993_u64})).matches(&big));
        assert!(filter(json!({"data.id": {"$gt": 9_007_199_254_740_992_u64}})).matches(&big));
        assert!(filter(json!({"data.id": {"$gt": -1}})).matches(&big));
        assert!(passes(json!({"data.amount": 150.0})));
        assert!(passes(json!({"data.amount": {"$in": [1, 150.0]}})));
        assert!(passes(
            json!({"data.customer": {"email": "ann@example.com", "address": {"country": "FR"}}})
        ));
    }

    #[test]
    fn a_bad_filter_says_what_is_wrong() {
        assert!(refused(json!([1])).contains("must be an object"));
        assert!(
            refused(json!({"data.status": {"$like": "x"}})).contains("unknown operator `$like`")
        );
        assert!(refused(json!({"$xor": []})).contains("unknown operator `$xor`"));
        assert!(refused(json!({"$or": []})).contains("at least one filter"));
        assert!(refused(json!({"$and": {"a": 1}})).contains("list of filters"));
        assert!(refused(json!({"data.amount": {"$gt": [1]}})).contains("number or a string"));
        assert!(refused(json!({"data.status": {"$in": "read"}})).contains("list of values"));
        assert!(refused(json!({"data.x": {"$exist": 1}})).contains("true or false"));
        assert!(refused(json!({"data.x": {"$regex": "("}})).contains("not a usable pattern"));
        assert!(refused(json!({"data.x": {"$not": 1}})).contains("object of operators"));
        assert!(refused(json!({"data..x": 1})).contains("not a path"));
        assert!(refused(json!({"$not": {}})).contains("is empty"));
    }

    #[test]
    fn sizes_are_bounded() {
        let message = refused(json!({"data.x": {"$regex": "(a{100}){100}"}}));
        assert!(message.contains("too big"), "{message}");
        // Patterns people write fit.
        for usual in [
            "^hello",
            "\\w+@example\\.(com|org)$",
            "^[A-Z]{2}-\\d{4,8}$",
            "(?i)urgent",
        ] {
            assert!(passes_compile(usual), "{usual}");
        }
        let regexes: Map<String, Value> = (0..=MAX_REGEXES)
            .map(|i| (format!("data.f{i}"), json!({"$regex": "^a"})))
            .collect();
        assert!(refused(Value::Object(regexes)).contains("`$regex` tests"));
        let long = "a".repeat(MAX_REGEX_CHARS + 1);
        assert!(refused(json!({"data.x": {"$regex": long}})).contains("characters"));
        let many: Map<String, Value> = (0..=MAX_FILTER_TESTS)
            .map(|i| (format!("data.f{i}"), json!(i)))
            .collect();
        assert!(refused(Value::Object(many)).contains("at most"));
        let mut deep = json!({"data.x": 1});
        for _ in 0..=MAX_FILTER_DEPTH {
            deep = json!({"$not": deep});
        }
        assert!(refused(deep).contains("nest"));
        let values: Vec<u32> = (0..=MAX_IN_VALUES as u32).collect();
        assert!(refused(json!({"data.x": {"$in": values}})).contains("at most"));
        let huge = "x".repeat(MAX_FILTER_BYTES);
        assert!(refused(json!({"data.x": huge})).contains("bytes"));
        let path = vec!["a"; MAX_PATH_SEGMENTS + 1].join(".");
        assert!(refused(json!({ path: 1 })).contains("segments"));
    }

    #[test]
    fn a_filter_keeps_its_source() {
        let source = json!({"data.status": {"$in": ["read"]}});
        assert_eq!(Filter::parse(&source).unwrap().as_json(), &source);
    }
}
