use std::io::Read;

use super::*;
use crate::inventory::{sorted_pairs, Inventory};
use crate::selector::{FieldSelector, LabelSelector, ObjectKind};

/// 2024-12-24T09:33:53Z
const T: i64 = 1_735_032_833;

fn snapshot() -> Arc<Snapshot> {
    let mut s = Snapshot::default();
    for (name, cpu, mem) in [
        ("node-a", 123_456_789u64, 12_533_760u64),
        ("node-b", 0, 1000),
    ] {
        s.nodes.name.push(Arc::from(name));
        s.nodes.cpu_nanocores.push(cpu);
        s.nodes.memory_bytes.push(mem);
        s.nodes.timestamp_ms.push(T * 1000 + 501);
        s.nodes.window_ms.push(15_012);
    }
    s.pods.container_start.push(0);
    for (ns, name, containers) in [
        (
            "default",
            "web",
            &[
                ("app", 500_000_000u64, 3u64 << 20),
                ("sidecar", 20_000, 1536),
            ][..],
        ),
        ("kube-system", "dns", &[("coredns", 1_500_000, 512)][..]),
    ] {
        s.pods.namespace.push(Arc::from(ns));
        s.pods.name.push(Arc::from(name));
        s.pods.node.push(Arc::from("node-a"));
        s.pods.timestamp_ms.push(T * 1000);
        s.pods.window_ms.push(60_500);
        for (c, cpu, mem) in containers {
            s.containers.name.push(Arc::from(*c));
            s.containers.cpu_nanocores.push(*cpu);
            s.containers.memory_bytes.push(*mem);
        }
        s.pods.container_start.push(s.containers.name.len() as u32);
    }
    Arc::new(s)
}

fn pairs(p: &[(&str, &str)]) -> Box<[crate::inventory::Pair]> {
    sorted_pairs(p.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// node-a role=worker, node-b no labels; default/web app=web, kube-system/dns k=v.
fn served_with(node_a: &[(&str, &str)], web: &[(&str, &str)]) -> Arc<Served> {
    let mut inv = Inventory::new();
    inv.set_node("node-a", pairs(node_a));
    inv.set_node("node-b", pairs(&[]));
    inv.set_pod("default", "web", pairs(web));
    inv.set_pod("kube-system", "dns", pairs(&[("k", "v")]));
    let view = View::from_inventory(snapshot(), &inv).unwrap();
    Arc::new(Served::from_view(view).unwrap())
}

fn served() -> Arc<Served> {
    served_with(&[("role", "worker")], &[("app", "web")])
}

fn req(format: Format, single: bool) -> Request {
    Request {
        api_version: ApiVersion::V1beta1,
        format,
        single,
        now_s: T + 7,
    }
}

fn table(object: RowObject) -> Format {
    Format::Table {
        object,
        v1beta1: false,
    }
}

fn encode(s: &Arc<Served>, kind: Kind, ids: &[u32], r: &Request) -> Vec<u8> {
    Response::new(s.clone(), kind, ids.to_vec(), r)
        .unwrap()
        .to_vec()
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

const FORMATS: [Format; 7] = [
    Format::Json,
    Format::Protobuf,
    Format::Table {
        object: RowObject::Metadata,
        v1beta1: false,
    },
    Format::Table {
        object: RowObject::Object,
        v1beta1: false,
    },
    Format::Table {
        object: RowObject::None,
        v1beta1: false,
    },
    Format::Table {
        object: RowObject::Metadata,
        v1beta1: true,
    },
    Format::Table {
        object: RowObject::Object,
        v1beta1: true,
    },
];

#[test]
fn planned_length_is_exact_and_chunks_concatenate_to_the_body() {
    let s = served();
    for format in FORMATS {
        for kind in [Kind::Node, Kind::Pod] {
            for (ids, single) in [
                (&[][..], false),
                (&[1][..], false),
                (&[0, 1, 0][..], false),
                (&[1][..], true),
            ] {
                let r = req(format, single);
                let whole = Response::new(s.clone(), kind, ids.to_vec(), &r).unwrap();
                let len = whole.len();
                let body = whole.to_vec();
                assert_eq!(len, body.len(), "{format:?} {kind:?} {ids:?} {single}");
                for limit in [1, 7, 64, 1 << 20] {
                    let mut resp = Response::new(s.clone(), kind, ids.to_vec(), &r).unwrap();
                    let mut joined = Vec::new();
                    let mut chunks = 0;
                    while !resp.is_done() {
                        let mut chunk = Vec::new();
                        resp.fill(&mut chunk, limit);
                        joined.extend_from_slice(&chunk);
                        chunks += 1;
                        assert!(chunks < 10_000);
                    }
                    assert_eq!(joined, body, "limit {limit}");
                }
            }
        }
    }
}

#[test]
fn node_list_json_is_exact() {
    let s = served();
    let out = encode(&s, Kind::Node, &[0, 1], &req(Format::Json, false));
    assert_eq!(
        text(out),
        concat!(
            r#"{"kind":"NodeMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":["#,
            r#"{"metadata":{"name":"node-a","creationTimestamp":"2024-12-24T09:34:00Z","labels":{"role":"worker"}},"#,
            r#""timestamp":"2024-12-24T09:33:53Z","window":"15.012s","usage":{"cpu":"123456789n","memory":"12240Ki"}},"#,
            r#"{"metadata":{"name":"node-b","creationTimestamp":"2024-12-24T09:34:00Z"},"#,
            r#""timestamp":"2024-12-24T09:33:53Z","window":"15.012s","usage":{"cpu":"0","memory":"1k"}}]}"#,
            "\n"
        )
    );
}

#[test]
fn single_pod_json_has_kind_and_version() {
    let s = served_with(&[], &[]);
    let mut r = req(Format::Json, true);
    r.api_version = ApiVersion::V1;
    assert_eq!(
        text(encode(&s, Kind::Pod, &[0], &r)),
        concat!(
            r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1","#,
            r#""metadata":{"name":"web","namespace":"default","creationTimestamp":"2024-12-24T09:34:00Z"},"#,
            r#""timestamp":"2024-12-24T09:33:53Z","window":"1m0.5s","containers":["#,
            r#"{"name":"app","usage":{"cpu":"500m","memory":"3Mi"}},"#,
            r#"{"name":"sidecar","usage":{"cpu":"20u","memory":"1536"}}]}"#,
            "\n"
        )
    );
    assert_eq!(
        Response::new(s.clone(), Kind::Pod, vec![0, 1], &r).unwrap_err(),
        EncodeError::NotSingle(2)
    );
    assert_eq!(
        Response::new(s, Kind::Pod, vec![2], &req(Format::Json, false)).unwrap_err(),
        EncodeError::IndexOutOfRange { index: 2, len: 2 }
    );
}

#[test]
fn empty_list() {
    let s = served();
    assert_eq!(
        text(encode(&s, Kind::Pod, &[], &req(Format::Json, false))),
        "{\"kind\":\"PodMetricsList\",\"apiVersion\":\"metrics.k8s.io/v1beta1\",\"metadata\":{},\"items\":[]}\n"
    );
}

#[test]
fn table_sums_containers_and_follows_the_table_version() {
    let s = served();
    let out = text(encode(
        &s,
        Kind::Pod,
        &[0],
        &req(table(RowObject::Metadata), false),
    ));
    assert!(out.starts_with(r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"Name of the resource","priority":0},"#));
    // 500m + 20u = 500020u; 3Mi + 1536 = 3147264
    assert!(out.ends_with(
        r#""rows":[{"cells":["web","500020u","3147264","1m0.5s"],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web","namespace":"default","creationTimestamp":"2024-12-24T09:34:00Z","labels":{"app":"web"}}}}]}
"#
    ), "{out}");
    let beta = Format::Table {
        object: RowObject::Metadata,
        v1beta1: true,
    };
    let out = text(encode(&s, Kind::Pod, &[0, 1], &req(beta, false)));
    assert!(out.starts_with(r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1beta1","#));
    assert_eq!(out.matches("meta.k8s.io/v1beta1").count(), 3, "{out}");
    assert!(!out.contains("\"meta.k8s.io/v1\""));
}

#[test]
fn table_row_object_follows_include_object() {
    let s = served();
    let row = |object: RowObject, kind: Kind| {
        let out = text(encode(&s, kind, &[0], &req(table(object), false)));
        let start = out.find(r#""rows":["#).unwrap();
        out[start..].trim_end().to_string()
    };
    // Object: the whole item, as the JSON list holds it, with kind and
    // apiVersion (kubectl get --sort-by reads the item's fields).
    let item = text(encode(&s, Kind::Pod, &[0], &req(Format::Json, true)));
    assert_eq!(
        row(RowObject::Object, Kind::Pod),
        format!(
            r#""rows":[{{"cells":["web","500020u","3147264","1m0.5s"],"object":{}}}]}}"#,
            item.trim_end()
        )
    );
    let node = text(encode(&s, Kind::Node, &[0], &req(Format::Json, true)));
    assert_eq!(
        row(RowObject::Object, Kind::Node),
        format!(
            r#""rows":[{{"cells":["node-a","123456789n","12240Ki","15.012s"],"object":{}}}]}}"#,
            node.trim_end()
        )
    );
    assert_eq!(
        row(RowObject::None, Kind::Pod),
        r#""rows":[{"cells":["web","500020u","3147264","1m0.5s"],"object":null}]}"#
    );
}

// A minimal protobuf reader to check the wire form independently.
fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// (field, wire type, varint value or bytes)
fn fields(b: &[u8]) -> Vec<(u64, u64, u64, &[u8])> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = read_varint(b, &mut pos);
        match key & 7 {
            0 => {
                let v = read_varint(b, &mut pos);
                out.push((key >> 3, 0, v, &b[0..0]));
            }
            2 => {
                let l = read_varint(b, &mut pos) as usize;
                out.push((key >> 3, 2, 0, &b[pos..pos + l]));
                pos += l;
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

#[test]
fn protobuf_list_decodes_to_the_same_values() {
    let s = served_with(&[], &[]);
    let out = encode(&s, Kind::Pod, &[0, 1], &req(Format::Protobuf, false));
    assert_eq!(&out[..4], b"k8s\0");
    let unknown = fields(&out[4..]);
    assert_eq!(unknown.len(), 4);
    let tm = fields(unknown[0].3);
    assert_eq!(tm[0].3, b"metrics.k8s.io/v1beta1");
    assert_eq!(tm[1].3, b"PodMetricsList");
    assert_eq!((unknown[2].0, unknown[2].3), (3, &b""[..]));
    assert_eq!((unknown[3].0, unknown[3].3), (4, &b""[..]));
    let list = fields(unknown[1].3);
    assert_eq!((list[0].0, list[0].3), (1, &b""[..]));
    assert_eq!(list.len(), 3);
    let pod = fields(list[2].3);
    let meta = fields(pod[0].3);
    assert_eq!(meta[0].3, b"dns");
    assert_eq!((meta[1].0, meta[1].3), (3, &b"kube-system"[..]));
    assert_eq!(meta[2].0, 8);
    assert_eq!(fields(meta[2].3)[0].2, (T + 7) as u64);
    let entry = fields(meta[3].3);
    assert_eq!(
        (meta[3].0, entry[0].3, entry[1].3),
        (11, &b"k"[..], &b"v"[..])
    );
    assert_eq!(fields(pod[1].3)[0].2, T as u64);
    assert_eq!(fields(pod[2].3)[0].2, 60_500_000_000);
    let container = fields(pod[3].3);
    assert_eq!(container[0].3, b"coredns");
    let cpu = fields(container[1].3);
    assert_eq!(cpu[0].3, b"cpu");
    assert_eq!(fields(cpu[1].3)[0].3, b"1500u");
    let mem = fields(container[2].3);
    assert_eq!(mem[0].3, b"memory");
    assert_eq!(fields(mem[1].3)[0].3, b"512");
    // The first pod has two containers, in name order, and no labels.
    let pod0 = fields(list[1].3);
    assert_eq!(pod0.len(), 5);
    assert_eq!(fields(pod0[4].3)[0].3, b"sidecar");
}

#[test]
fn protobuf_single_node() {
    let s = served();
    let out = encode(&s, Kind::Node, &[1], &req(Format::Protobuf, true));
    let unknown = fields(&out[4..]);
    assert_eq!(fields(unknown[0].3)[1].3, b"NodeMetrics");
    let node = fields(unknown[1].3);
    assert_eq!(fields(node[0].3)[0].3, b"node-b");
    assert_eq!(fields(node[2].3)[0].2, 15_012_000_000);
    assert_eq!(node[3].0, 4);
    assert_eq!(fields(fields(node[3].3)[1].3)[0].3, b"0");
    assert_eq!(fields(fields(node[4].3)[1].3)[0].3, b"1k");
}

fn big(pods: u32) -> Arc<Served> {
    let mut s = Snapshot::default();
    let mut inv = Inventory::new();
    s.pods.container_start.push(0);
    for i in 0..pods {
        let name = format!("p{i:06}");
        s.pods.namespace.push(Arc::from("ns"));
        s.pods.name.push(Arc::from(name.as_str()));
        s.pods.node.push(Arc::from("n"));
        s.pods.timestamp_ms.push(0);
        s.pods.window_ms.push(1000);
        s.containers.name.push(Arc::from("c"));
        s.containers.cpu_nanocores.push(u64::from(i) * 7919);
        s.containers.memory_bytes.push(u64::from(i) << 10);
        s.pods.container_start.push(i + 1);
        inv.set_pod("ns", &name, pairs(&[("app", &format!("a{}", i % 7))]));
    }
    let view = View::from_inventory(Arc::new(s), &inv).unwrap();
    Arc::new(Served::from_view(view).unwrap())
}

#[test]
fn many_items_in_any_order() {
    let s = big(1000);
    let ids: Vec<u32> = (0..1000).rev().collect();
    let out = text(encode(&s, Kind::Pod, &ids, &req(Format::Json, false)));
    assert_eq!(out.matches("\"name\":\"p").count(), 1000);
    assert!(out.contains(r#"{"name":"p000999","namespace":"ns","#));
    let first = out.find("p000999").unwrap();
    assert!(first < out.find("p000000").unwrap());
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn drain(mut body: Body) -> (Vec<u8>, usize) {
    let mut all = Vec::new();
    let mut chunks = 0;
    while let Some(c) = body.next_chunk().unwrap() {
        assert!(!c.is_empty());
        all.extend_from_slice(&c);
        chunks += 1;
    }
    assert!(body.next_chunk().unwrap().is_none(), "stays finished");
    (all, chunks)
}

#[test]
fn bodies_stream_in_bounded_chunks_and_gzip_decodes_to_the_plain_bytes() {
    let s = big(8_000);
    let ids: Vec<u32> = (0..8_000).collect();
    for format in FORMATS {
        let r = req(format, false);
        let plain = encode(&s, Kind::Pod, &ids, &r);
        assert!(plain.len() > 2 * GZIP_THRESHOLD);
        let resp = Response::new(s.clone(), Kind::Pod, ids.clone(), &r).unwrap();
        let mut body = Body::new(resp, false);
        assert!(!body.is_gzip());
        let mut joined = Vec::new();
        while let Some(c) = body.next_chunk().unwrap() {
            // one item of overshoot at most
            assert!(c.len() < CHUNK_BYTES + 4096, "{}", c.len());
            joined.extend_from_slice(&c);
        }
        assert_eq!(joined, plain);
        let resp = Response::new(s.clone(), Kind::Pod, ids.clone(), &r).unwrap();
        let body = Body::new(resp, true);
        assert!(body.is_gzip());
        let (gz, chunks) = drain(body);
        assert!(
            gz.len() < plain.len() / 3,
            "{} vs {}",
            gz.len(),
            plain.len()
        );
        assert!(chunks >= 1);
        assert_eq!(gunzip(&gz), plain, "{format:?}");
    }
}

#[test]
fn small_bodies_are_never_gzipped() {
    let s = served();
    let r = req(Format::Json, false);
    let resp = Response::new(s.clone(), Kind::Pod, vec![0, 1], &r).unwrap();
    assert!(resp.len() < GZIP_THRESHOLD);
    let body = Body::new(resp, true);
    assert!(!body.is_gzip());
    let (out, chunks) = drain(body);
    assert_eq!(chunks, 1);
    assert_eq!(out, encode(&s, Kind::Pod, &[0, 1], &r));
}

#[test]
fn list_and_get() {
    let s = served();
    let l = LabelSelector::parse("app=web").unwrap();
    let f = FieldSelector::parse("", ObjectKind::Pod).unwrap();
    let q = Query {
        namespace: None,
        labels: &l,
        fields: &f,
    };
    let r = req(Format::Json, false);
    let body = list(&s, Kind::Pod, &q, &r, false).unwrap();
    assert_eq!(body.response().ids(), &[0]);
    assert_eq!(drain(body).0, encode(&s, Kind::Pod, &[0], &r));
    let r = req(Format::Json, true);
    let body = get(&s, Kind::Pod, "kube-system", "dns", &r, false)
        .unwrap()
        .unwrap();
    assert_eq!(drain(body).0, encode(&s, Kind::Pod, &[1], &r));
    assert!(get(&s, Kind::Pod, "default", "dns", &r, false)
        .unwrap()
        .is_none());
    assert!(get(&s, Kind::Node, "", "node-b", &r, false)
        .unwrap()
        .is_some());
    assert!(s.heap_bytes() > 0);
}

#[test]
fn values_skip_items_the_view_does_not_serve() {
    let mut inv = Inventory::new();
    inv.set_pod("default", "web", pairs(&[]));
    let view = View::from_inventory(snapshot(), &inv).unwrap();
    let s = Served::from_view(view).unwrap();
    assert_eq!(s.pods.item(1).next_value(), b"");
    let web = s.pods.item(0).pod();
    assert_eq!(web.cpu_sum, b"500020u");
    assert_eq!(web.window, b"1m0.5s");
    assert_eq!(s.nodes.item(0).next_value(), b"", "no node is known");
}

/// `cargo test --release -p kubemetrics-core timing -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_formats_150k() {
    let s = big(150_000);
    let ids: Vec<u32> = (0..150_000).collect();
    for format in FORMATS.iter().take(3) {
        for _ in 0..10 {
            let t0 = std::time::Instant::now();
            let mut resp =
                Response::new(s.clone(), Kind::Pod, ids.clone(), &req(*format, false)).unwrap();
            let t1 = t0.elapsed();
            let mut n = 0;
            let mut out = Vec::with_capacity(CHUNK_BYTES + 4096);
            while !resp.is_done() {
                out.clear();
                resp.fill(&mut out, CHUNK_BYTES);
                n += out.len();
            }
            eprintln!("{format:?}: plan {t1:?} total {:?} {n} bytes", t0.elapsed());
        }
    }
}
