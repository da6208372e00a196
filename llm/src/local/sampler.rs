//! Picking the next token from the logits: greedy (temperature 0 or unset, the reproducible
//! default for agents), or temperature + nucleus (top-p) sampling from a seeded generator so a
//! given seed always yields the same tokens.

/// How the next token is chosen.
#[derive(Debug)]
pub enum Sampler {
    Greedy,
    Random {
        temperature: f32,
        /// Keep the most likely tokens whose probabilities add up to this (1 = all).
        top_p: f32,
        rng: fastrand::Rng,
    },
}

impl Sampler {
    /// A temperature of 0 or none is greedy; otherwise a seed of none draws one at random.
    pub fn new(temperature: Option<f32>, top_p: Option<f32>, seed: Option<u64>) -> Sampler {
        match temperature {
            Some(t) if t > 0.0 && t.is_finite() => Sampler::Random {
                temperature: t,
                top_p: top_p.filter(|p| *p > 0.0 && *p < 1.0).unwrap_or(1.0),
                rng: fastrand::Rng::with_seed(seed.unwrap_or_else(|| fastrand::u64(..))),
            },
            _ => Sampler::Greedy,
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        match self {
            Sampler::Greedy => argmax(logits),
            Sampler::Random {
                temperature,
                top_p,
                rng,
            } => sample_top_p(logits, *temperature, *top_p, rng),
        }
    }
}

/// The index of the largest logit (the first of equals; NaNs never win).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Softmax of `logits / temperature`, in place of a copy.
fn probabilities(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits
        .iter()
        .map(|&l| {
            let e = ((l - max) / temperature).exp();
            if e.is_finite() { e } else { 0.0 }
        })
        .collect();
    let sum: f32 = p.iter().sum();
    if sum > 0.0 {
        p.iter_mut().for_each(|x| *x /= sum);
    }
    p
}

/// Draws from the smallest set of most likely tokens whose probability reaches `top_p`.
fn sample_top_p(logits: &[f32], temperature: f32, top_p: f32, rng: &mut fastrand::Rng) -> u32 {
    let p = probabilities(logits, temperature);
    let mut order: Vec<u32> = (0..p.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    let mut kept = 0usize;
    let mut mass = 0.0f32;
    for &id in &order {
        kept += 1;
        mass += p[id as usize];
        if mass >= top_p {
            break;
        }
    }
    let mut r = rng.f32() * mass;
    for &id in &order[..kept] {
        r -= p[id as usize];
        if r <= 0.0 {
            return id;
        }
    }
    order[kept.saturating_sub(1)]
}

/// `ln(sum(exp(logits)))`, computed stably: the normaliser of log-probabilities.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    max + sum.ln()
}

/// The log-probability that the next token is any of `ids`.
pub fn log_prob_of_any(logits: &[f32], ids: &[u32]) -> f32 {
    let lse = log_sum_exp(logits);
    let sum: f32 = ids
        .iter()
        .filter_map(|&id| logits.get(id as usize))
        .map(|&l| (l - lse).exp())
        .sum();
    sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect()
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(None, None, Some(1));
        assert!(matches!(s, Sampler::Greedy));
        assert_eq!(s.sample(&[0.1, 2.0, f32::NAN, 2.0, -1.0]), 1);
        assert!(matches!(
            Sampler::new(Some(0.0), Some(0.5), None),
            Sampler::Greedy
        ));
    }

    #[test]
    fn a_seed_makes_sampling_deterministic() {
        let draw = |seed| {
            let mut s = Sampler::new(Some(1.0), Some(0.95), Some(seed));
            (0..64).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Sampling at temperature 1 does pick more than the argmax.
        let distinct: std::collections::BTreeSet<_> = draw(7).into_iter().collect();
        assert!(distinct.len() > 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // One token holds ~88% of the mass: top_p 0.5 always picks it.
        let mut l = vec![0.0f32; 10];
        l[3] = 5.0;
        let mut s = Sampler::new(Some(1.0), Some(0.5), Some(3));
        assert!((0..100).all(|_| s.sample(&l) == 3));
    }

    #[test]
    fn log_probabilities_add_up() {
        let l = logits();
        let all: Vec<u32> = (0..l.len() as u32).collect();
        assert!(log_prob_of_any(&l, &all).abs() < 1e-5);
        let one = log_prob_of_any(&l, &[4]);
        assert!((one - (l[4] - log_sum_exp(&l))).abs() < 1e-5);
    }
}
