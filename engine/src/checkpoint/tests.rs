//! Checkpoint round trips: bit-exact restores that continue identically, any table
//! contents, corrupt and truncated files.

use super::*;
use crate::device::cpu_autodiff_device;
use crate::synth::SynthConfig;

fn trained(events: &[recsys_schemas::Event]) -> Model {
    let cfg = MfConfig {
        dim: 8,
        logq_correction: true,
        ..MfConfig::default()
    };
    let mut m = MfModel::new(cfg, cpu_autodiff_device()).unwrap();
    for batch in events.chunks(256) {
        m.train_events(batch).unwrap();
    }
    Model::Mf(m)
}

fn parts(m: &Model) -> String {
    // Both kinds' parts compare through their Debug form (f32 bits included).
    match m {
        Model::Mf(m) => format!("{:?}", m.to_parts()),
        Model::TwoTower(m) => {
            // burn writes Adam's state in map order: equal states, different bytes.
            let mut p = m.to_parts().unwrap();
            p.optimizer.clear();
            format!("{p:?}")
        }
    }
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        generation: 3,
        offsets: BTreeMap::from([("events/0".into(), 1200), ("events/1".into(), 800)]),
        applied: BTreeMap::from([("events/0".into(), 1198), ("events/1".into(), 800)]),
        dead_lettered: BTreeMap::from([("events/0".into(), 2)]),
        skipped: BTreeMap::new(),
        created_ms: 1,
    }
}

#[test]
fn round_trip_is_bit_exact_and_training_continues_identically() {
    let data = SynthConfig {
        users: 200,
        items: 100,
        events: 3_000,
        clusters: 5,
        seed: 4,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let (first, rest) = data.train.split_at(2_000);
    let restored = restores_and_continues(trained(first), rest, 256);
    assert_eq!(restored.kind(), ModelKind::Mf);
}

/// Writes `original` and loads it back: the same state, and after the same next
/// batches (new users and items included) still the same model, loss for loss.
fn restores_and_continues(
    mut original: Model,
    rest: &[recsys_schemas::Event],
    batch: usize,
) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &original, &meta(), 3).unwrap();
    let (mut restored, m) = load(&path, cpu_autodiff_device()).unwrap();
    assert_eq!(m, meta());
    assert_eq!(parts(&restored), parts(&original));
    for batch in rest.chunks(batch) {
        let a = original.train_events(batch).unwrap();
        let b = restored.train_events(batch).unwrap();
        assert_eq!(a.0.loss.to_bits(), b.0.loss.to_bits());
    }
    assert_eq!(parts(&restored), parts(&original));
    restored
}

#[test]
fn two_tower_round_trip_is_bit_exact() {
    let data = SynthConfig {
        users: 100,
        items: 60,
        events: 1_500,
        clusters: 4,
        seed: 9,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let cfg = TwoTowerConfig {
        dim: 8,
        hidden: 16,
        history_len: 4,
        logq_correction: true,
        negatives: 8,
        ..TwoTowerConfig::default()
    };
    let mut m = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap();
    m.set_item_categories("i1", &["a".into(), "b".into()]);
    let (first, rest) = data.train.split_at(1_000);
    for batch in first.chunks(128) {
        m.train_events(batch).unwrap();
    }
    let restored = restores_and_continues(Model::TwoTower(m), rest, 128);
    assert_eq!(restored.kind(), ModelKind::TwoTower);
}

#[test]
fn corrupt_or_truncated_files_are_rejected_and_the_older_one_is_used() {
    let data = SynthConfig {
        users: 50,
        items: 30,
        events: 500,
        clusters: 3,
        seed: 2,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let model = trained(&data.train);
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..4 {
        write(dir.path(), &model, &meta(), 2).unwrap();
    }
    let kept = list(dir.path()).unwrap();
    assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![3, 2]);
    let newest = &kept[0].1;
    let mut bytes = fs::read(newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(newest, &bytes).unwrap();
    let err = load(newest, cpu_autodiff_device()).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    let (_, _, used) = load_latest(dir.path(), &cpu_autodiff_device())
        .unwrap()
        .unwrap();
    assert_eq!(used, kept[1].1);
    fs::write(&kept[1].1, &bytes[..100]).unwrap();
    assert!(
        load_latest(dir.path(), &cpu_autodiff_device())
            .unwrap()
            .is_none()
    );
    // A half-written temporary file is not a checkpoint.
    fs::write(dir.path().join("ckpt-000000000009.bin.tmp"), b"x").unwrap();
    assert_eq!(list(dir.path()).unwrap().len(), 2);
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    /// MF state of any shape: ids (some rows freed by expiry, as empty ids), tables
    /// and Adagrad accumulators of any finite values, frequencies, step counts and
    /// last-seen times.
    fn mf_parts() -> impl Strategy<Value = MfParts> {
        (1usize..6, 0usize..12, 0usize..12).prop_flat_map(|(dim, users, items)| {
            let ids = |n: usize, prefix: &'static str| {
                prop::collection::vec(any::<bool>(), n).prop_map(move |live| {
                    live.iter()
                        .enumerate()
                        .map(|(k, &l)| {
                            if l {
                                format!("{prefix}{k}")
                            } else {
                                String::new()
                            }
                        })
                        .collect::<Vec<_>>()
                })
            };
            let floats = |n: usize| prop::collection::vec(-1e3f32..1e3, n);
            let table = move |rows: usize| {
                (
                    floats(rows * dim),
                    prop::collection::vec(0f32..1e3, rows),
                    any::<u64>(),
                )
                    .prop_map(move |(data, accum, seed)| TableParts {
                        dim,
                        init_scale: 0.1,
                        seed,
                        data,
                        accum,
                    })
            };
            (
                ids(users, "u"),
                ids(items, "i"),
                table(users),
                table(items),
                prop::collection::vec(0f64..1e6, items),
                any::<u64>(),
                prop::collection::vec(any::<u32>(), users),
                prop::collection::vec(any::<u32>(), items),
            )
                .prop_map(
                    move |(user_ids, item_ids, u, i, counts, steps, user_seen, item_seen)| {
                        MfParts {
                            cfg: MfConfig {
                                dim,
                                ..MfConfig::default()
                            },
                            user_ids,
                            item_ids,
                            users: u,
                            items: i,
                            total_count: counts.iter().sum(),
                            item_counts: counts,
                            steps,
                            user_seen,
                            item_seen,
                        }
                    },
                )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the tables hold, a checkpoint reads back exactly what was written,
        /// with its stream position.
        #[test]
        fn any_mf_state_round_trips_bit_exactly(parts in mf_parts(), next in 0i64..1 << 40) {
            let model = Model::Mf(MfModel::from_parts(parts.clone(), cpu_autodiff_device()).unwrap());
            let meta = CheckpointMeta {
                offsets: BTreeMap::from([("events/0".into(), next)]),
                ..meta()
            };
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), &model, &meta, 1).unwrap();
            let (restored, read_meta) = load(&path, cpu_autodiff_device()).unwrap();
            prop_assert_eq!(read_meta, meta);
            let Model::Mf(restored) = restored else {
                panic!("an MF checkpoint restored as another kind")
            };
            prop_assert_eq!(format!("{:?}", restored.to_parts()), format!("{parts:?}"));
        }
    }
}
