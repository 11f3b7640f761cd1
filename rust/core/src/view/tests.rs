use super::*;
use crate::inventory::sorted_pairs;
use crate::selector::{FieldSelector, LabelSelector, ObjectKind};

fn pairs(p: &[(&str, &str)]) -> Box<[crate::inventory::Pair]> {
    sorted_pairs(p.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// A snapshot with the given nodes and pods (sorted here as the store sorts).
pub(crate) fn snapshot(nodes: &[&str], pods: &[(&str, &str, &str)]) -> Snapshot {
    let mut s = Snapshot::default();
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    for n in nodes {
        s.nodes.name.push(Arc::from(n));
        s.nodes.cpu_nanocores.push(1);
        s.nodes.memory_bytes.push(1);
        s.nodes.timestamp_ms.push(1000);
        s.nodes.window_ms.push(1);
    }
    let mut pods = pods.to_vec();
    pods.sort_unstable();
    s.pods.container_start.push(0);
    let mut interned: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |x: &str| {
        interned
            .entry(x.to_string())
            .or_insert_with(|| Arc::from(x))
            .clone()
    };
    for (ns, name, node) in pods {
        s.pods.namespace.push(intern(ns));
        s.pods.name.push(intern(name));
        s.pods.node.push(intern(node));
        s.pods.timestamp_ms.push(2000);
        s.pods.window_ms.push(1);
        s.containers.name.push(Arc::from("c"));
        s.containers.cpu_nanocores.push(1);
        s.containers.memory_bytes.push(1);
        s.pods.container_start.push(s.containers.name.len() as u32);
    }
    s
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn pods_of(v: &View, ns: Option<&str>, labels: &str, fields: &str) -> Vec<u32> {
    let l = sel(labels);
    let f = FieldSelector::parse(fields, ObjectKind::Pod).unwrap();
    let q = Query {
        namespace: ns,
        labels: &l,
        fields: &f,
    };
    let got = v.select(Kind::Pod, &q);
    assert_eq!(
        got,
        v.select_scan(Kind::Pod, &q),
        "{ns:?} {labels} {fields}"
    );
    got
}

fn nodes_of(v: &View, labels: &str, fields: &str) -> Vec<u32> {
    let l = sel(labels);
    let f = FieldSelector::parse(fields, ObjectKind::Node).unwrap();
    let q = Query {
        namespace: None,
        labels: &l,
        fields: &f,
    };
    let got = v.select(Kind::Node, &q);
    assert_eq!(got, v.select_scan(Kind::Node, &q), "{labels} {fields}");
    got
}

fn example() -> (Arc<Snapshot>, Inventory) {
    let s = snapshot(
        &["n1", "n2", "n3"],
        &[
            ("a", "p1", "n1"),
            ("a", "p2", "n2"),
            ("b", "p1", "n1"),
            ("b", "p3", "n3"),
            ("c", "p9", "n1"),
        ],
    );
    let mut inv = Inventory::new();
    inv.set_node("n1", pairs(&[("role", "x")]));
    inv.set_node("n3", pairs(&[]));
    inv.set_node("n9", pairs(&[])); // known but without metrics
    for (ns, name, app) in [
        ("a", "p1", "web"),
        ("a", "p2", "db"),
        ("b", "p3", "web"),
        ("c", "p9", "web"),
        ("z", "p0", "web"),
    ] {
        inv.set_pod(ns, name, pairs(&[("app", app)]));
    }
    (Arc::new(s), inv)
}

#[test]
fn selection_needs_inventory_and_snapshot() {
    let (s, inv) = example();
    let v = View::from_inventory(s, &inv).unwrap();
    assert_eq!(nodes_of(&v, "", ""), vec![0, 2]);
    assert_eq!(nodes_of(&v, "role", ""), vec![0]);
    assert_eq!(nodes_of(&v, "", "metadata.name=n3"), vec![2]);
    assert!(nodes_of(&v, "", "metadata.namespace=x").is_empty());
    assert_eq!(nodes_of(&v, "", "metadata.namespace="), vec![0, 2]);
    assert_eq!(nodes_of(&v, "", "metadata.namespace!=x"), vec![0, 2]);

    // b/p1 is in the snapshot but not the inventory.
    assert_eq!(pods_of(&v, None, "", ""), vec![0, 1, 3, 4]);
    assert_eq!(pods_of(&v, Some("a"), "", ""), vec![0, 1]);
    assert_eq!(pods_of(&v, Some("b"), "app=web", ""), vec![3]);
    assert!(pods_of(&v, Some("z"), "", "").is_empty());
    assert!(pods_of(&v, Some("0"), "", "").is_empty());
    assert_eq!(pods_of(&v, None, "app=web", ""), vec![0, 3, 4]);
    assert_eq!(pods_of(&v, None, "", "spec.nodeName=n1"), vec![0, 4]);
    assert_eq!(pods_of(&v, None, "", "metadata.name=p1"), vec![0]);
    assert_eq!(pods_of(&v, Some("a"), "", "metadata.name=p1"), vec![0]);
    assert_eq!(pods_of(&v, None, "", "metadata.namespace=b"), vec![3]);
    assert!(pods_of(&v, Some("a"), "", "metadata.namespace=b").is_empty());
    assert_eq!(pods_of(&v, None, "", "metadata.namespace!=a"), vec![3, 4]);
    assert_eq!(pods_of(&v, None, "app in (db,nope)", ""), vec![1]);
    assert!(pods_of(&v, None, "nokey=1", "").is_empty());
    assert_eq!(v.pod("b", "p3"), Some(3));
    assert_eq!(v.pod("b", "p1"), None, "not in the inventory");
    assert_eq!(v.pod("zz", "p1"), None);
    assert_eq!(v.node("n3"), Some(2));
    assert_eq!(v.node("n2"), None);
    assert_eq!(v.timestamps(Kind::Pod, &[0, 4]), vec![2000, 2000]);
}

#[test]
fn deletions_apply_at_once_labels_and_additions_next_view() {
    let (s, mut inv) = example();
    let v = View::from_inventory(s.clone(), &inv).unwrap();
    assert!(!v.check_liveness());
    inv.delete_pod("a", "p1");
    inv.delete_node("n1");
    inv.set_pod("a", "p2", pairs(&[("app", "changed")]));
    inv.set_pod("b", "p1", pairs(&[("app", "web")]));
    assert!(v.check_liveness());
    assert_eq!(pods_of(&v, None, "", ""), vec![1, 3, 4]);
    assert_eq!(pods_of(&v, None, "app=web", ""), vec![3, 4]);
    // labels as they were when the view was built
    assert_eq!(pods_of(&v, None, "app=db", ""), vec![1]);
    assert_eq!(v.labels(Kind::Pod, 1).get("app"), Some("db"));
    assert_eq!(v.pod("a", "p1"), None);
    assert_eq!(nodes_of(&v, "", ""), vec![2]);
    assert_eq!(v.node("n1"), None);
    // the next view sees the new labels and members
    let next = View::from_inventory(s, &inv).unwrap();
    assert_eq!(pods_of(&next, None, "app=changed", ""), vec![1]);
    assert_eq!(pods_of(&next, None, "app=web", ""), vec![2, 3, 4]);
}

#[test]
fn inconsistent_snapshots_are_errors() {
    let (s, inv) = example();
    let mut bad = (*s).clone();
    bad.pods.container_start[1] = 99;
    assert!(View::from_inventory(Arc::new(bad), &inv).is_err());
    let mut bad = (*s).clone();
    bad.nodes.window_ms.pop();
    let shared = Shared::new();
    assert!(View::build(Arc::new(bad), &shared).is_err());
}

#[test]
fn cost_is_the_smallest_source() {
    let mut names = Vec::new();
    for k in 0..2000u32 {
        names.push((
            format!("ns{}", k % 4),
            format!("p{k:05}"),
            format!("n{}", k % 50),
        ));
    }
    let pods: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let s = Arc::new(snapshot(&[], &pods));
    let mut inv = Inventory::new();
    for (k, (ns, name, _)) in names.iter().enumerate() {
        inv.set_pod(
            ns,
            name,
            pairs(&[("app", &format!("a{}", k % 100)), ("all", "1")]),
        );
    }
    let v = View::from_inventory(s, &inv).unwrap();
    let cost = |ns: Option<&str>, l: &str, f: &str| {
        let l = sel(l);
        let f = FieldSelector::parse(f, ObjectKind::Pod).unwrap();
        v.cost(
            Kind::Pod,
            &Query {
                namespace: ns,
                labels: &l,
                fields: &f,
            },
        )
    };
    assert_eq!(cost(None, "", ""), 2000);
    assert_eq!(cost(Some("ns1"), "", ""), 500);
    assert_eq!(cost(Some("ns1"), "app=nope", ""), 0);
    assert_eq!(cost(Some("ns1"), "all,app=a1", ""), 20);
    assert_eq!(cost(Some("ns2"), "all,app=a1", ""), 0);
    assert_eq!(cost(None, "app in (a1,a2,x,y)", ""), 40);
    assert_eq!(cost(None, "", "spec.nodeName=n7"), 40);
    assert_eq!(cost(None, "", "metadata.name=p00007"), 1);
    assert_eq!(
        cost(None, "app!=a1", ""),
        2000,
        "negative terms only filter"
    );
    let long: Vec<String> = (0..1500).map(|i| format!("v{i}")).collect();
    assert_eq!(cost(None, &format!("app in ({})", long.join(",")), ""), 0);
}

// ------------------------------------------------------------ properties --

/// splitmix64: deterministic, dependency-free randomness for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const KEYS: &[&str] = &["a", "b", "c", "example.com/d"];
const VALUES: &[&str] = &["x", "y", "z", "1", "2", "10", ""];
const NAMESPACES: &[&str] = &["ns0", "ns1", "ns2", "kube-system"];

fn random_labels(r: &mut Rng) -> String {
    let mut terms = Vec::new();
    for _ in 0..r.below(4) {
        let k = r.pick(KEYS);
        let v = r.pick(VALUES);
        let term = match r.below(9) {
            0 => format!("{k}={v}"),
            1 => format!("{k}=={v}"),
            2 => format!("{k}!={v}"),
            3 => {
                let vs: Vec<&str> = (0..1 + r.below(3)).map(|_| r.pick(VALUES)).collect();
                format!("{k} in ({})", vs.join(","))
            }
            4 => format!("{k} notin ({v},{})", r.pick(VALUES)),
            5 => k.to_string(),
            6 => format!("!{k}"),
            7 => format!("{k}>{}", r.below(12)),
            _ => format!("{k}<{}", r.below(12)),
        };
        terms.push(term);
    }
    terms.join(",")
}

fn random_fields(r: &mut Rng, kind: Kind, pods: usize, nodes: usize) -> String {
    let mut terms = Vec::new();
    for _ in 0..r.below(3) {
        let op = if r.below(3) == 0 { "!=" } else { "=" };
        let term = match (kind, r.below(3)) {
            (Kind::Pod, 0) => format!("spec.nodeName{op}n{}", r.below(nodes + 1)),
            (_, 1) => format!("metadata.namespace{op}{}", r.pick(NAMESPACES)),
            (Kind::Node, 0) => format!("metadata.namespace{op}"),
            _ => match kind {
                Kind::Pod => format!("metadata.name{op}p{}", r.below(pods + 1)),
                Kind::Node => format!("metadata.name{op}n{}", r.below(nodes + 1)),
            },
        };
        terms.push(term);
    }
    terms.join(",")
}

#[test]
fn indexed_selection_equals_a_plain_scan() {
    let mut r = Rng(0x5eed);
    for round in 0..300 {
        let n_nodes = 1 + r.below(8);
        let n_pods = r.below(60);
        let node_names: Vec<String> = (0..n_nodes).map(|i| format!("n{i}")).collect();
        let mut pod_rows: Vec<(String, String, String)> = Vec::new();
        for i in 0..n_pods {
            let ns = r.pick(NAMESPACES).to_string();
            // names repeat across namespaces on purpose
            let name = format!("p{}", i % (1 + n_pods / 2));
            if pod_rows.iter().any(|(a, b, _)| *a == ns && *b == name) {
                continue;
            }
            pod_rows.push((ns, name, format!("n{}", r.below(n_nodes))));
        }
        let nodes: Vec<&str> = node_names.iter().map(String::as_str).collect();
        let pods: Vec<(&str, &str, &str)> = pod_rows
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        let s = Arc::new(snapshot(&nodes, &pods));
        let mut inv = Inventory::new();
        let random_set = |r: &mut Rng| {
            let labels: Vec<(&str, &str)> = (0..r.below(4))
                .map(|_| (r.pick(KEYS), r.pick(VALUES)))
                .collect();
            pairs(&labels)
        };
        for n in &nodes {
            if r.below(5) != 0 {
                inv.set_node(n, random_set(&mut r));
            }
        }
        for (ns, name, _) in &pods {
            if r.below(6) != 0 {
                inv.set_pod(ns, name, random_set(&mut r));
            }
        }
        let v = View::from_inventory(s, &inv).unwrap();
        // Some members die after the build; some labels change (not seen).
        if round % 2 == 1 {
            for (ns, name, _) in &pods {
                match r.below(5) {
                    0 => {
                        inv.delete_pod(ns, name);
                    }
                    1 => inv.set_pod(ns, name, random_set(&mut r)),
                    _ => {}
                }
            }
            for n in &nodes {
                if r.below(5) == 0 {
                    inv.delete_node(n);
                }
            }
        }
        for _ in 0..20 {
            let labels = random_labels(&mut r);
            let l = sel(&labels);
            let kind = if r.below(3) == 0 {
                Kind::Node
            } else {
                Kind::Pod
            };
            let fields = random_fields(&mut r, kind, n_pods, n_nodes);
            let object = match kind {
                Kind::Node => ObjectKind::Node,
                Kind::Pod => ObjectKind::Pod,
            };
            let f = FieldSelector::parse(&fields, object).unwrap();
            let namespace = (kind == Kind::Pod && r.below(2) == 0).then(|| r.pick(NAMESPACES));
            let q = Query {
                namespace,
                labels: &l,
                fields: &f,
            };
            let want = v.select_scan(kind, &q);
            assert_eq!(
                v.select(kind, &q),
                want,
                "round {round}: {kind:?} ns={namespace:?} labels={labels:?} fields={fields:?}"
            );
            assert!(v.cost(kind, &q) >= want.len());
        }
    }
}
