//! `docs/openapi.yaml` describes exactly the routes the router has, and its references resolve.

use std::collections::BTreeSet;

use arbiter_worker::OPENAPI_YAML;
use arbiter_worker::routes::ROUTE_TABLE;
use serde_yaml_ng::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_yaml_ng::from_str(OPENAPI_YAML).expect("docs/openapi.yaml is valid YAML")
}

#[test]
fn documented_routes_equal_the_route_table() {
    let doc = doc();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0"))
    );
    let paths = doc["paths"].as_mapping().expect("a paths mapping");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().unwrap();
        let item = item.as_mapping().unwrap();
        for key in item.keys() {
            let key = key.as_str().unwrap();
            if METHODS.contains(&key) {
                documented.insert((key.to_uppercase(), path.to_owned()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTE_TABLE
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "undocumented: {missing:?}; not served: {extra:?}"
    );
}

#[test]
fn every_reference_resolves_and_path_parameters_are_declared() {
    let doc = doc();
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    if k.as_str() == Some("$ref") {
                        refs.push(v.as_str().unwrap().to_owned());
                    } else {
                        walk(v, refs);
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let mut node = &doc;
        for part in r
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("external ref {r}"))
            .split('/')
        {
            node = &node[part];
        }
        assert!(!node.is_null(), "unresolved {r}");
    }
    // Each {param} in a path is declared as a path parameter of each of its operations.
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        let path = path.as_str().unwrap();
        let params: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_mapping().unwrap() {
            let declared: BTreeSet<String> = op["parameters"]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .map(|p| match p["$ref"].as_str() {
                            Some(r) => {
                                &doc["components"]["parameters"][r.rsplit('/').next().unwrap()]
                            }
                            None => p,
                        })
                        .filter(|p| p["in"].as_str() == Some("path"))
                        .map(|p| p["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let wanted: BTreeSet<String> = params.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(declared, wanted, "{method:?} {path}");
        }
    }
}
