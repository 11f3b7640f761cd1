use super::*;
use crate::parse::{Batch, ContainerColumns, NodeSample};

const RES: i64 = 15_000;
const T0: i64 = 1_700_000_000_000;
const OLD: f64 = 1.0e9;

type Row<'a> = (&'a str, &'a str, &'a str, f64, f64, f64, i64);

fn batch(node: (f64, f64, i64), rows: &[Row<'_>]) -> Batch {
    let mut c = ContainerColumns::default();
    for &(ns, pod, name, cpu, mem, start, ts) in rows {
        c.namespace.push(ns.into());
        c.pod.push(pod.into());
        c.container.push(name.into());
        c.cpu_seconds.push(cpu);
        c.memory_bytes.push(mem);
        c.start_time_seconds.push(start);
        c.timestamp_ms.push(ts);
    }
    Batch {
        node: NodeSample {
            cpu_seconds: node.0,
            memory_bytes: node.1,
            timestamp_ms: node.2,
        },
        containers: c,
    }
}

/// One node, one pod with two containers, at sample `k` (10 s apart).
fn sample(k: i64) -> Batch {
    let t = T0 + 10_000 * k;
    let f = k as f64;
    batch(
        (100.0 + f, 4096.0, t),
        &[
            ("ns", "p", "a", 10.0 + f, 5.0e6, OLD, t),
            ("ns", "p", "b", 20.0 + 2.0 * f, 6.0e6, OLD, t - 5),
        ],
    )
}

fn roundtrip(from: &Store, into: &mut Store, now: i64) -> Imported {
    let body = from.export_points(now, &[]);
    let d = decode(&body, 1 << 20).expect("decodes");
    into.import_points(&d, now)
}

#[test]
fn a_peer_serves_what_the_owner_scraped() {
    let mut owner = Store::new(RES);
    owner.ingest("n1", &sample(0), T0);
    owner.ingest("n1", &sample(1), T0 + 10_000);
    let mut peer = Store::new(RES);
    let got = roundtrip(&owner, &mut peer, T0 + 10_000);
    assert_eq!(got.nodes, ["n1"]);
    assert_eq!(got.containers, 2);
    assert_eq!(peer.snapshot(T0 + 10_000), owner.snapshot(T0 + 10_000));
    // Imported points are not the peer's own: it does not export them on.
    let again = peer.export_points(T0 + 10_000, &[]);
    assert_eq!(decode(&again, 1 << 20).unwrap().node_count(), 0);
}

#[test]
fn the_adopter_rates_from_its_first_scrape() {
    let mut owner = Store::new(RES);
    owner.ingest("n1", &sample(0), T0);
    owner.ingest("n1", &sample(1), T0 + 10_000);
    let mut adopter = Store::new(RES);
    roundtrip(&owner, &mut adopter, T0 + 10_000);
    // The owner dies; the adopter's first own scrape pairs with the imported last.
    adopter.ingest("n1", &sample(2), T0 + 20_000);
    let snap = adopter.snapshot(T0 + 20_000);
    assert_eq!(snap.nodes.cpu_nanocores, [100_000_000]);
    assert_eq!(snap.nodes.window_ms, [10_000]);
    assert_eq!(snap.containers.cpu_nanocores, [100_000_000, 200_000_000]);
    // Without the import there is no rate yet.
    let mut alone = Store::new(RES);
    alone.ingest("n1", &sample(2), T0 + 20_000);
    assert!(alone.snapshot(T0 + 20_000).nodes.is_empty());
}

#[test]
fn a_new_owner_s_single_point_pairs_with_the_old_owner_s() {
    // The new owner scraped once (no prev yet); the old owner still has its
    // older pair. Either side's merge serves the rate across the handoff.
    let mut old = Store::new(RES);
    old.ingest("n1", &sample(0), T0);
    old.ingest("n1", &sample(1), T0 + 10_000);
    let old_body = old.export_points(T0 + 20_000, &[]);
    let mut new = Store::new(RES);
    new.ingest("n1", &sample(2), T0 + 20_000);
    roundtrip(&new, &mut old, T0 + 20_000);
    let snap = old.snapshot(T0 + 20_000);
    assert_eq!(snap.nodes.timestamp_ms, [T0 + 20_000]);
    assert_eq!(snap.nodes.window_ms, [10_000]);
    assert_eq!(snap.containers.cpu_nanocores, [100_000_000, 200_000_000]);
    new.import_points(&decode(&old_body, 1 << 20).unwrap(), T0 + 20_000);
    assert_eq!(new.snapshot(T0 + 20_000), snap);
}

#[test]
fn newest_sample_wins_and_older_imports_change_nothing() {
    let mut a = Store::new(RES);
    a.ingest("n1", &sample(0), T0);
    a.ingest("n1", &sample(1), T0 + 10_000);
    let stale_body = a.export_points(T0 + 10_000, &[]);
    a.ingest("n1", &sample(2), T0 + 20_000);
    let before = a.snapshot(T0 + 20_000);
    // A body exported before our newest scrape (and aged accordingly).
    let d = decode(&stale_body, 1 << 20).unwrap();
    a.import_points(&d, T0 + 10_000);
    assert_eq!(a.snapshot(T0 + 20_000), before);
}

#[test]
fn a_restarted_container_does_not_pair_across_incarnations() {
    let mut owner = Store::new(RES);
    let t1 = T0 + 10_000;
    owner.ingest(
        "n1",
        &batch((1.0, 1.0, T0), &[("ns", "p", "c", 50.0, 1.0e6, OLD, T0)]),
        T0,
    );
    owner.ingest(
        "n1",
        &batch((2.0, 1.0, t1), &[("ns", "p", "c", 60.0, 1.0e6, OLD, t1)]),
        t1,
    );
    let mut adopter = Store::new(RES);
    roundtrip(&owner, &mut adopter, t1);
    // Restarted at t1 + 1 s: counter from zero, new start time.
    let t2 = T0 + 20_000;
    let start = (t1 + 1_000) as f64 / 1000.0;
    let b = batch((3.0, 1.0, t2), &[("ns", "p", "c", 0.5, 1.0e6, start, t2)]);
    let mut other = Store::new(RES);
    other.ingest("n1", &b, t2);
    roundtrip(&other, &mut adopter, t2);
    let snap = adopter.snapshot(t2);
    assert!(
        snap.pods.is_empty(),
        "no rate from the old incarnation's counter"
    );
    assert_eq!(snap.nodes.cpu_nanocores, [100_000_000]);
}

#[test]
fn points_past_the_grace_are_not_paired() {
    let mut owner = Store::new(RES);
    owner.ingest("n1", &sample(0), T0);
    owner.ingest("n1", &sample(1), T0 + 10_000);
    let mut peer = Store::new(RES);
    roundtrip(&owner, &mut peer, T0 + 10_000);
    // A much later scrape elsewhere: the old points are history.
    let late = T0 + 10_000 + 3 * RES;
    let mut other = Store::new(RES);
    other.ingest("n1", &sample(6), late);
    roundtrip(&other, &mut peer, late);
    assert!(peer.snapshot(late).nodes.is_empty());
}

#[test]
fn only_points_within_the_grace_are_exported() {
    let mut s = Store::new(RES);
    s.ingest("n1", &sample(0), T0);
    s.ingest("n2", &sample(0), T0 + 2 * RES);
    let d = decode(&s.export_points(T0 + 2 * RES + 1, &["n9"]), 1 << 20).unwrap();
    let mut peer = Store::new(RES);
    let got = peer.import_points(&d, T0);
    assert_eq!(got.nodes, ["n2"]);
    assert_eq!(got.failing, ["n9"]);
}

#[test]
fn ages_not_clocks_carry_the_grace() {
    // The importer's clock is an hour ahead: the node still counts as just scraped.
    let mut owner = Store::new(RES);
    owner.ingest("n1", &sample(0), T0);
    owner.ingest("n1", &sample(1), T0 + 10_000);
    let body = owner.export_points(T0 + 12_000, &[]);
    let mut peer = Store::new(RES);
    let skewed = T0 + 12_000 + 3_600_000;
    peer.import_points(&decode(&body, 1 << 20).unwrap(), skewed);
    assert_eq!(peer.snapshot(skewed).nodes.name.len(), 1);
}

#[test]
fn a_fresh_container_s_synthetic_prev_travels() {
    let mut owner = Store::new(RES);
    let start = (T0 - 12_000) as f64 / 1000.0; // 12 s old: fresh
    owner.ingest(
        "n1",
        &batch((1.0, 1.0, T0), &[("ns", "p", "c", 1.2, 1.0e6, start, T0)]),
        T0,
    );
    let mut peer = Store::new(RES);
    roundtrip(&owner, &mut peer, T0);
    let snap = peer.snapshot(T0);
    assert_eq!(snap.containers.cpu_nanocores, [100_000_000]);
    assert_eq!(snap, owner.snapshot(T0));
}

#[test]
fn the_body_is_compact() {
    let mut s = Store::new(RES);
    let rows: Vec<(String, String, String)> = (0..1000)
        .map(|i| {
            (
                format!("team-{}", i % 4),
                format!("web-7d9f8c6b5-{i:05}"),
                "web".to_string(),
            )
        })
        .collect();
    for k in 0..2 {
        let t = T0 + 10_000 * k;
        let r: Vec<Row<'_>> = rows
            .iter()
            .enumerate()
            .map(|(i, (ns, p, c))| {
                let cpu = 1000.0 + i as f64 + k as f64 * 0.25;
                (
                    ns.as_str(),
                    p.as_str(),
                    c.as_str(),
                    cpu,
                    3.0e7 + i as f64,
                    OLD,
                    t - i as i64,
                )
            })
            .collect();
        s.ingest("n1", &batch((1.0 + k as f64, 1.0, t), &r), t);
    }
    let body = s.export_points(T0 + 10_000, &[]);
    // 1000 containers with both points and unique pod names: about 21 bytes each
    // (the raw CPU counters are most of it).
    assert!(body.len() < 24_000, "{} bytes", body.len());
    let mut peer = Store::new(RES);
    roundtrip(&s, &mut peer, T0 + 10_000);
    assert_eq!(peer.snapshot(T0 + 10_000), s.snapshot(T0 + 10_000));
}

// --- hostile bodies ---------------------------------------------------------------------

fn deflated(plain: &[u8]) -> Vec<u8> {
    let mut out = b"KMPT\x01\x01".to_vec();
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(1));
    enc.write_all(plain).unwrap();
    out.extend(enc.finish().unwrap());
    out
}

#[test]
fn a_decompression_bomb_is_refused_at_the_limit() {
    // 64 MiB of zeros deflate to well under 1 MiB.
    let body = deflated(&vec![0u8; 64 << 20]);
    assert!(body.len() < 1 << 20, "{}", body.len());
    let e = decode(&body, 1 << 20).unwrap_err();
    assert!(e.0.contains("inflates past 1048576 bytes"), "{e}");
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    let mut s = Store::new(RES);
    s.ingest("n1", &sample(0), T0);
    s.ingest("n1", &sample(1), T0 + 10_000);
    let good = s.export_points(T0 + 10_000, &["n1"]);
    let mut plain = Vec::new();
    DeflateDecoder::new(&good[HEADER..])
        .read_to_end(&mut plain)
        .unwrap();
    assert!(decode(&good, 1 << 20).is_ok());
    // Every truncation and every single-byte change of the inflated body.
    for cut in 0..plain.len() {
        assert!(
            decode(&deflated(&plain[..cut]), 1 << 20).is_err(),
            "cut at {cut}"
        );
    }
    for i in 0..plain.len() {
        for b in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut bad = plain.clone();
            bad[i] = b;
            let _ = decode(&deflated(&bad), 1 << 20); // Ok or Err, never a panic
        }
    }
    assert!(decode(b"KMPT", 1 << 20).is_err());
    assert!(decode(b"XXXX\x01\x01", 1 << 20).is_err());
    assert!(decode(b"KMPT\x02\x01", 1 << 20)
        .unwrap_err()
        .0
        .contains("version 2"));
    assert!(decode(b"KMPT\x01\x01garbage", 1 << 20).is_err());
    // Counts that promise more than the body holds allocate nothing.
    let e = decode(&deflated(&[0xff, 0xff, 0xff, 0xff, 0x0f]), 1 << 20).unwrap_err();
    assert!(e.0.contains("exceeds the body"), "{e}");
    // Ids past the table.
    let e = decode(&deflated(&[0, 1, 5]), 1 << 20).unwrap_err();
    assert!(e.0.contains("out of range"), "{e}");
}

#[test]
fn unsorted_containers_are_refused() {
    // names: ns, p, a, b, n; no failing; one node with containers b then a.
    let mut plain = vec![5];
    for n in ["ns", "p", "a", "b", "n"] {
        plain.push(n.len() as u8);
        plain.extend_from_slice(n.as_bytes());
    }
    plain.extend_from_slice(&[0, 1, 4, 0, 0, 2]);
    plain.extend_from_slice(&[0, 1, 3, 0, 0, 1, 1]);
    plain.extend_from_slice(&[0, 1, 2, 0, 0, 1, 1]);
    let e = decode(&deflated(&plain), 1 << 20).unwrap_err();
    assert!(e.0.contains("not sorted"), "{e}");
}
