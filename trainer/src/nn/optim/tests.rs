use super::*;
use crate::nn::Rng;

fn param(name: &str, value: Vec<f32>) -> Param {
    let n = value.len();
    Param::from_values(name, &[n], value)
}

#[test]
fn adam_matches_the_pytorch_recurrence_in_f64() {
    // Five steps with changing gradients against the same recurrence written out in f64:
    // the f32 state differs by rounding only, 1e-6 relative to the step size.
    let mut rng = Rng::new(100);
    for (decoupled, wd) in [(false, 0.0), (false, 0.1), (true, 0.1)] {
        let mut opt = if decoupled {
            Adam::adamw(wd)
        } else {
            Adam::new(wd)
        };
        let theta0 = rng.normal_vec(7, 1.0);
        let mut p = param("w", theta0.clone());
        let (mut th, mut m, mut v) = (
            theta0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            vec![0.0f64; 7],
            vec![0.0f64; 7],
        );
        let lr = 0.01;
        for t in 1..=5 {
            p.grad = rng.normal_vec(7, 1.0);
            opt.step(&mut [&mut p], lr);
            for j in 0..7 {
                let mut g = p.grad[j] as f64;
                if decoupled {
                    th[j] *= 1.0 - lr as f64 * wd as f64;
                } else {
                    g += wd as f64 * th[j];
                }
                m[j] = 0.9 * m[j] + 0.1 * g;
                v[j] = 0.999 * v[j] + 0.001 * g * g;
                let mh = m[j] / (1.0 - 0.9f64.powi(t));
                let vh = v[j] / (1.0 - 0.999f64.powi(t));
                th[j] -= lr as f64 * mh / (vh.sqrt() + 1e-8);
            }
        }
        assert_eq!(opt.steps(), 5);
        for j in 0..7 {
            let err = (p.value[j] as f64 - th[j]).abs();
            assert!(
                err < 1e-6 * lr as f64 * 5.0 + 1e-7,
                "decoupled {decoupled}: θ[{j}] off by {err:e}"
            );
        }
    }
}

#[test]
fn adam_first_step_moves_every_weight_by_lr() {
    // m̂ = g and v̂ = g² after one step, so Δθ = −lr·g/(|g| + eps), lr·sign(g) up to eps/|g|:
    // to 1e-6 relative (f32 state).
    let mut p = param("w", vec![0.0; 4]);
    p.grad = vec![3.0, -0.02, 1e-3, -50.0];
    Adam::new(0.0).step(&mut [&mut p], 0.1);
    for (&x, &g) in p.value.iter().zip(&p.grad) {
        let want = -0.1 * g as f64 / (g.abs() as f64 + 1e-8);
        assert!((x as f64 - want).abs() < 1e-6 * 0.1, "{x} vs {want}");
    }
}

#[test]
fn adamw_decouples_weight_decay() {
    // With zero gradients AdamW only shrinks the weights, θ·(1 − lr·λ)^t, while Adam's L2
    // term turns into a full-size Adam step of lr·sign(θ).
    let (lr, wd) = (0.1f32, 0.5f32);
    let mut p = param("w", vec![2.0, -1.0]);
    let mut opt = Adam::adamw(wd);
    for _ in 0..3 {
        opt.step(&mut [&mut p], lr);
    }
    let shrink = (1.0 - lr * wd).powi(3);
    assert!((p.value[0] - 2.0 * shrink).abs() < 1e-6 && (p.value[1] + shrink).abs() < 1e-6);
    let mut q = param("w", vec![2.0, -1.0]);
    Adam::new(wd).step(&mut [&mut q], lr);
    assert!(
        (q.value[0] - 1.9).abs() < 1e-6 && (q.value[1] + 0.9).abs() < 1e-6,
        "{:?}",
        q.value
    );
}

#[test]
fn sgd_momentum_closed_form() {
    // A constant gradient g: the buffer after s steps is g·(1 − μ^s)/(1 − μ), so after t steps
    // θ = θ0 − lr·g·Σ_{s=1..t} (1 − μ^s)/(1 − μ). Nesterov adds μ·b to each step's gradient.
    let (lr, mu, g, t) = (0.05f32, 0.9f32, 2.0f32, 6);
    for nesterov in [false, true] {
        let mut opt = Sgd::new(mu);
        opt.nesterov = nesterov;
        let mut p = param("w", vec![1.0]);
        for _ in 0..t {
            p.grad = vec![g];
            opt.step(&mut [&mut p], lr);
        }
        let buf = |s: i32| (1.0 - (mu as f64).powi(s)) / (1.0 - mu as f64);
        let moved: f64 = (1..=t)
            .map(|s| {
                if nesterov {
                    1.0 + mu as f64 * buf(s)
                } else {
                    buf(s)
                }
            })
            .sum();
        let want = 1.0 - lr as f64 * g as f64 * moved;
        assert!(
            (p.value[0] as f64 - want).abs() < 1e-5,
            "nesterov {nesterov}: {} vs {want}",
            p.value[0]
        );
    }
    // Plain SGD with L2 decay: θ ← θ − lr·(g + λθ).
    let mut opt = Sgd::new(0.0);
    opt.weight_decay = 0.1;
    let mut p = param("w", vec![1.0]);
    p.grad = vec![0.5];
    opt.step(&mut [&mut p], 0.2);
    assert!((p.value[0] - (1.0 - 0.2 * 0.6)).abs() < 1e-7);
}

#[test]
fn optimizers_minimise_a_quadratic() {
    // f(θ) = Σ a_i (θ_i − c_i)², curvatures 0.5..5: every optimizer reaches the minimum to 1e-3.
    let a = [0.5f32, 1.0, 2.0, 5.0];
    let c = [1.0f32, -2.0, 0.5, 3.0];
    let run = |opt: &mut dyn Optimizer, lr: f32, steps: usize| {
        let mut p = param("w", vec![0.0; 4]);
        for _ in 0..steps {
            p.grad = (0..4).map(|i| 2.0 * a[i] * (p.value[i] - c[i])).collect();
            opt.step(&mut [&mut p], lr);
        }
        p.value
    };
    let sgd = run(&mut Sgd::new(0.0), 0.05, 500);
    let mom = run(&mut Sgd::new(0.9), 0.01, 500);
    let adam = run(&mut Adam::new(0.0), 0.05, 2000);
    for (name, v) in [("sgd", sgd), ("momentum", mom), ("adam", adam)] {
        for i in 0..4 {
            assert!(
                (v[i] - c[i]).abs() < 1e-3,
                "{name}: θ[{i}] = {} (want {})",
                v[i],
                c[i]
            );
        }
    }
}

#[test]
#[should_panic(expected = "parameter `b` (2 values) where `a` (2 values) was")]
fn optimizer_state_is_bound_to_the_parameter_list() {
    let mut opt = Adam::new(0.0);
    opt.step(&mut [&mut param("a", vec![0.0; 2])], 0.1);
    opt.step(&mut [&mut param("b", vec![0.0; 2])], 0.1);
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let mut p = param("p", vec![0.0; 2]);
    let mut q = param("q", vec![0.0]);
    p.grad = vec![3.0, 4.0];
    q.grad = vec![12.0];
    let norm = clip_grad_norm(&mut [&mut p, &mut q], 1.0);
    assert_eq!(norm, 13.0);
    let after = grad_norm(&[&p, &q]);
    assert!((after - 1.0).abs() < 1e-6, "{after}");
    // Direction kept.
    assert!((p.grad[1] / p.grad[0] - 4.0 / 3.0).abs() < 1e-6);
    // Below the threshold nothing changes.
    let before = p.grad.clone();
    clip_grad_norm(&mut [&mut p, &mut q], 5.0);
    assert_eq!(p.grad, before);
}

#[test]
fn schedules() {
    let s = Schedule {
        base: 1.0,
        warmup: 4,
        total: 14,
        decay: Decay::Cosine,
        min_lr: 0.1,
    };
    let lrs: Vec<f32> = (0..16).map(|t| s.lr(t)).collect();
    assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
    assert_eq!(lrs[4], 1.0);
    assert!((lrs[9] - 0.55).abs() < 1e-6, "midpoint {}", lrs[9]); // (1 + 0.1)/2
    assert!(lrs[4..14].windows(2).all(|w| w[1] < w[0]), "decreasing");
    assert_eq!((lrs[14], lrs[15]), (0.1, 0.1));
    let lin = Schedule {
        decay: Decay::Linear,
        min_lr: 0.0,
        ..s
    };
    assert!((lin.lr(4 + 5) - 0.5).abs() < 1e-6 && (lin.lr(11) - 0.3).abs() < 1e-6);
    let flat = Schedule {
        decay: Decay::Constant,
        ..s
    };
    assert_eq!((flat.lr(2), flat.lr(100)), (0.75, 1.0));
    assert_eq!(Schedule::constant(0.01).lr(0), 0.01);
}
