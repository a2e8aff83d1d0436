//! Tests of the two-tower model: learning, the fused step, features, restoring.

use super::*;
use crate::device::cpu_autodiff_device;
use recsys_schemas::Event;

fn ev(u: &str, i: &str) -> Event {
    Event::from_json(
        format!(r#"{{"user_id":"{u}","item_id":"{i}"}}"#).as_bytes(),
        0,
    )
    .unwrap()
}

#[test]
fn steps_lower_the_loss_and_outputs_are_unit_vectors() {
    let mut m = TwoTowerModel::new(TwoTowerConfig::default(), cpu_autodiff_device()).unwrap();
    m.set_item_categories("p", &["shoes".into()]);
    m.set_item_categories("q", &["shoes".into(), "red".into()]);
    let batch = vec![ev("a", "p"), ev("b", "q"), ev("c", "r"), ev("a", "q")];
    let first = m.train_events(&batch).unwrap().0;
    let mut last = first;
    for _ in 0..30 {
        last = m.train_events(&batch).unwrap().0;
    }
    assert!(last.loss < first.loss, "{} !< {}", last.loss, first.loss);
    let items = m.item_vectors(&[0, 1, 2]).unwrap();
    for v in items.chunks(64) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let u = m.user_vector("a").unwrap();
    assert_eq!(u.len(), 64);
    assert!(u.iter().all(|x| x.is_finite()));
    assert!(m.user_vector("nobody").is_none());
}

#[test]
fn fused_step_trains_like_burn_autodiff() {
    let batch: Vec<Event> = (0..60)
        .map(|k| ev(&format!("u{}", k % 7), &format!("i{}", k % 11)))
        .collect();
    let run = |fused_cpu_step: bool| {
        let cfg = TwoTowerConfig {
            fused_cpu_step,
            dim: 16,
            hidden: 32,
            negatives: 5,
            logq_correction: true,
            ..TwoTowerConfig::default()
        };
        let mut m = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap();
        m.set_item_categories("i1", &["c".into()]);
        let losses: Vec<f32> = (0..5)
            .map(|_| m.train_events(&batch).unwrap().0.loss)
            .collect();
        (
            losses,
            m.item_vectors(&[0, 1, 2]).unwrap(),
            m.user_vector("u3").unwrap(),
        )
    };
    let (fused, burn) = (run(true), run(false));
    for (a, b) in fused.0.iter().zip(&burn.0) {
        assert!((a - b).abs() < 1e-4, "losses {:?} vs {:?}", fused.0, burn.0);
    }
    for (a, b) in fused
        .1
        .iter()
        .chain(&fused.2)
        .zip(burn.1.iter().chain(&burn.2))
    {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn history_and_categories_change_the_towers() {
    let mut m = TwoTowerModel::new(TwoTowerConfig::default(), cpu_autodiff_device()).unwrap();
    let batch = vec![ev("a", "p"), ev("b", "q")];
    for _ in 0..5 {
        m.train_events(&batch).unwrap();
    }
    let before = m.user_vector("a").unwrap();
    m.train_events(&[ev("a", "z")]).unwrap();
    assert_ne!(m.user_vector("a").unwrap(), before);
    let item_before = m.item_vectors(&[0]).unwrap();
    m.set_item_categories("p", &["shoes".into()]);
    // A fresh category row is random, so the item's features (and output) move.
    assert_ne!(m.item_vectors(&[0]).unwrap(), item_before);
}

/// burn serialises Adam's state in map order, so equal states can differ in bytes.
pub(crate) fn without_optimizer(mut p: TwoTowerParts) -> TwoTowerParts {
    p.optimizer.clear();
    p
}

#[test]
fn restored_model_continues_bit_exactly() {
    let cfg = TwoTowerConfig {
        dim: 8,
        hidden: 16,
        history_len: 3,
        negatives: 4,
        ..TwoTowerConfig::default()
    };
    let mut a = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap();
    a.set_item_categories("p", &["x".into()]);
    let b1 = vec![ev("a", "p"), ev("b", "q"), ev("a", "r")];
    let b2 = vec![ev("b", "p"), ev("c", "q"), ev("a", "s")];
    for _ in 0..3 {
        a.train_events(&b1).unwrap();
    }
    let parts = a.to_parts().unwrap();
    let mut b = TwoTowerModel::from_parts(parts.clone(), cpu_autodiff_device()).unwrap();
    assert_eq!(
        without_optimizer(b.to_parts().unwrap()),
        without_optimizer(parts)
    );
    for _ in 0..3 {
        let sa = a.train_events(&b2).unwrap().0;
        let sb = b.train_events(&b2).unwrap().0;
        assert_eq!(sa.loss.to_bits(), sb.loss.to_bits());
    }
    // Adam's moments came back exactly, or the weights would now differ.
    assert_eq!(
        without_optimizer(a.to_parts().unwrap()),
        without_optimizer(b.to_parts().unwrap())
    );
}

#[test]
fn rejects_bad_config_naming_the_key() {
    let cfg = TwoTowerConfig {
        hidden: 0,
        ..TwoTowerConfig::default()
    };
    let err = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap_err();
    assert!(err.to_string().contains("model.two_tower.hidden"), "{err}");
}
