//! Postprocessing: one image's raw outputs to the answer's classes, as `[model.postprocess]`
//! says. The seed's raw threshold ([`classify`], the default), a sigmoid and threshold
//! (multi-label) or a softmax and top k (single-label), each giving an [`Answer`] that renders as
//! the seed's JSON or, opted in, with each kept class's index and score.

use arbiter_config::Output;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::Labels;

/// The seed's answer, serialized exactly as it is:
/// `{"result": ["Dog", "Cat"], "status": 1}` or `{"result": "No Categories", "status": 0}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prediction {
    /// The kept classes' names, lowest output first.
    Labels(Vec<String>),
    /// No output passed the threshold.
    NoCategories,
}

impl Prediction {
    /// The seed's `status`: 1 with labels, 0 without.
    pub fn status(&self) -> u8 {
        match self {
            Prediction::Labels(_) => 1,
            Prediction::NoCategories => 0,
        }
    }
}

impl Serialize for Prediction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Prediction", 2)?;
        match self {
            Prediction::Labels(names) => s.serialize_field("result", names)?,
            Prediction::NoCategories => s.serialize_field("result", "No Categories")?,
        }
        s.serialize_field("status", &self.status())?;
        s.end()
    }
}

/// Classifies one image's raw outputs as the seed does (`thresh_sort`).
///
/// Keeps the indices whose output is strictly above `threshold` (NaN never is), orders them by
/// ascending output (ties keep index order), and maps them to names. Outputs beyond the label
/// count are ignored; [`crate::Model::load`] makes the two counts agree.
pub fn classify(outputs: &[f32], labels: &Labels, threshold: f32) -> Prediction {
    let kept = above(outputs.iter().take(labels.len()).copied(), threshold);
    if kept.is_empty() {
        return Prediction::NoCategories;
    }
    Prediction::Labels(
        kept.iter()
            .map(|&(i, _)| labels.name(i).to_owned())
            .collect(),
    )
}

/// The `(index, score)` of each score strictly above `threshold` (NaN never is), by ascending
/// score, ties in index order: the seed's `thresh_sort`.
fn above(scores: impl Iterator<Item = f32>, threshold: f32) -> Vec<(usize, f32)> {
    let mut kept: Vec<(usize, f32)> = scores.enumerate().filter(|&(_, v)| v > threshold).collect();
    // Stable; kept values are never NaN, so partial_cmp always answers.
    kept.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    kept
}

/// One kept class of an [`Answer`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    /// Its index among the model's outputs (and in the label file).
    pub index: usize,
    /// Its name from the label file.
    pub label: String,
    /// What it was kept by: the raw output (`output = "threshold"`), its sigmoid, or its softmax
    /// probability. Never NaN.
    pub score: f32,
}

/// The classes one image's outputs keep, in the answer's order: ascending score for a
/// threshold (the seed's order), most likely first for a softmax's top k.
///
/// It renders two ways. [`Answer::prediction`] is the seed's answer, names only, exactly as
/// [`classify`] gives it: `{"result": ["Dog", "Cat"], "status": 1}` or
/// `{"result": "No Categories", "status": 0}`. [`Answer::scored`] is the opt-in of
/// `scores = true`, the same two keys and a third with each kept class:
/// `{"result": ["tabby", "tiger cat"], "status": 1, "classes": [{"index": 281, "label": "tabby",
/// "score": 0.17}, {"index": 282, "label": "tiger cat", "score": 0.11}]}`, `"classes": []` when
/// none is kept. Scores are `f32`, written in the fewest digits that read back the same `f32`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    /// The kept classes, in the answer's order.
    pub classes: Vec<Class>,
}

impl Answer {
    /// The seed's answer: the kept classes' names, or "No Categories".
    pub fn prediction(&self) -> Prediction {
        if self.classes.is_empty() {
            Prediction::NoCategories
        } else {
            Prediction::Labels(self.classes.iter().map(|c| c.label.clone()).collect())
        }
    }

    /// The answer with each kept class's index, name and score, for serializing.
    pub fn scored(&self) -> Scored<'_> {
        Scored(self)
    }
}

/// An [`Answer`] serialized with its `classes` (see [`Answer::scored`]).
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a>(&'a Answer);

impl Serialize for Scored<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let prediction = self.0.prediction();
        let mut s = serializer.serialize_struct("Scored", 3)?;
        match &prediction {
            Prediction::Labels(names) => s.serialize_field("result", names)?,
            Prediction::NoCategories => s.serialize_field("result", "No Categories")?,
        }
        s.serialize_field("status", &prediction.status())?;
        s.serialize_field("classes", &self.0.classes)?;
        s.end()
    }
}

/// One image's raw outputs to its [`Answer`], as `output` says; `threshold` is
/// `model.threshold` (unused by a softmax).
///
/// - `Threshold`: the seed's, the very classes and order of [`classify`], each scored by its
///   raw output.
/// - `Sigmoid`: `torch.sigmoid(outputs) > threshold`, in the seed's ascending order.
/// - `Softmax { top_k }`: `torch.softmax(outputs).topk(k)`, most likely first; equal outputs in
///   index order; at most as many classes as the model has.
///
/// Sigmoid and softmax are computed in `f64` and rounded once to `f32`, so each score is the
/// `f32` nearest the exact value: torch's and numpy's `float32` kernels are within a few units in
/// the last place of it (about 1e-7 relative). The softmax ranks by the raw outputs, so its
/// rounding never reorders classes. A NaN output is never kept (a softmax over outputs with a
/// NaN keeps none, as every probability is NaN). Outputs beyond the label count are ignored.
pub fn postprocess(outputs: &[f32], labels: &Labels, threshold: f32, output: Output) -> Answer {
    let outputs = &outputs[..outputs.len().min(labels.len())];
    let kept: Vec<(usize, f32)> = match output {
        Output::Threshold => above(outputs.iter().copied(), threshold),
        Output::Sigmoid => above(outputs.iter().map(|&x| sigmoid(x)), threshold),
        Output::Softmax { top_k } => top_softmax(outputs, top_k),
    };
    Answer {
        classes: kept
            .into_iter()
            .map(|(index, score)| Class {
                index,
                label: labels.name(index).to_owned(),
                score,
            })
            .collect(),
    }
}

/// `1 / (1 + e^-x)`, in `f64`, rounded to `f32`.
fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
}

/// The `k` largest outputs' `(index, probability)`, largest first, equal outputs in index order.
fn top_softmax(outputs: &[f32], k: usize) -> Vec<(usize, f32)> {
    if outputs.iter().any(|x| x.is_nan()) {
        return Vec::new();
    }
    // Shifted by the largest output, as torch does, so no exponential overflows.
    let max = outputs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = f64::from(max);
    let exp = |x: f32| {
        let shifted = f64::from(x) - max;
        // An infinite largest output takes all the probability, as the limit does.
        if shifted.is_nan() { 1.0 } else { shifted.exp() }
    };
    let sum: f64 = outputs.iter().map(|&x| exp(x)).sum();
    let mut order: Vec<usize> = (0..outputs.len()).collect();
    // Stable: equal outputs keep index order.
    order.sort_by(|&a, &b| outputs[b].total_cmp(&outputs[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| (i, (exp(outputs[i]) / sum) as f32))
        .filter(|(_, p)| !p.is_nan())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Labels {
        let body: Vec<String> = (0..n).map(|i| format!("\"{i}\": \"c{i}\"")).collect();
        Labels::parse(&format!("{{{}}}", body.join(", "))).unwrap()
    }

    fn names(p: &Prediction) -> Vec<&str> {
        match p {
            Prediction::Labels(v) => v.iter().map(String::as_str).collect(),
            Prediction::NoCategories => vec![],
        }
    }

    #[test]
    fn kept_classes_sorted_by_ascending_output() {
        let l = labels(5);
        let p = classify(&[0.9, -1.0, 3.0, 0.6, 0.2], &l, 0.5);
        assert_eq!(names(&p), ["c3", "c0", "c2"]);
        assert_eq!(p.status(), 1);
    }

    #[test]
    fn threshold_is_strict() {
        let l = labels(3);
        assert_eq!(
            classify(&[0.5, 0.5, 0.50001], &l, 0.5),
            Prediction::Labels(vec!["c2".into()])
        );
        assert_eq!(
            classify(&[0.5, 0.5, 0.5], &l, 0.5),
            Prediction::NoCategories
        );
    }

    #[test]
    fn ties_keep_index_order() {
        let l = labels(4);
        assert_eq!(
            names(&classify(&[2.0, 1.0, 2.0, 1.0], &l, 0.5)),
            ["c1", "c3", "c0", "c2"]
        );
    }

    #[test]
    fn nan_never_passes() {
        let l = labels(3);
        assert_eq!(
            names(&classify(&[f32::NAN, 1.0, f32::NAN], &l, 0.5)),
            ["c1"]
        );
        assert_eq!(classify(&[f32::NAN; 3], &l, 0.5), Prediction::NoCategories);
        assert_eq!(
            classify(&[1.0, 2.0, 3.0], &l, f32::NAN),
            Prediction::NoCategories
        );
        assert_eq!(
            names(&classify(&[f32::INFINITY, 1.0, 0.0], &l, 0.5)),
            ["c1", "c0"]
        );
    }

    #[test]
    fn none_kept_is_no_categories() {
        let l = labels(3);
        assert_eq!(
            classify(&[-1.0, 0.0, 0.1], &l, 0.5),
            Prediction::NoCategories
        );
        assert_eq!(classify(&[], &l, 0.5), Prediction::NoCategories);
    }

    #[test]
    fn outputs_beyond_labels_are_ignored() {
        let l = labels(2);
        assert_eq!(names(&classify(&[0.0, 1.0, 9.0], &l, 0.5)), ["c1"]);
    }

    fn indices(a: &Answer) -> Vec<usize> {
        a.classes.iter().map(|c| c.index).collect()
    }

    #[test]
    fn threshold_answers_exactly_as_classify() {
        let l = labels(6);
        for outputs in [
            vec![0.9, -1.0, 3.0, 0.6, 0.2, f32::NAN],
            vec![2.0, 1.0, 2.0, 1.0, 0.0, 0.0],
            vec![0.0; 6],
            vec![f32::INFINITY, 0.5, 0.50001, -0.0, 9.0, 1.0, 7.0],
        ] {
            let answer = postprocess(&outputs, &l, 0.5, Output::Threshold);
            assert_eq!(
                answer.prediction(),
                classify(&outputs, &l, 0.5),
                "{outputs:?}"
            );
            for c in &answer.classes {
                assert_eq!(c.score.to_bits(), outputs[c.index].to_bits());
            }
        }
    }

    /// numpy's float32 softmax of [1, 2, 3, 0.5, 3]: 0.052348003, 0.14229663, 0.38680235,
    /// 0.03175067, 0.38680235 (its first is one unit in the last place from the f32 nearest
    /// the exact value, which this gives).
    #[test]
    fn softmax_top_k_most_likely_first() {
        let l = labels(5);
        let outputs = [1.0, 2.0, 3.0, 0.5, 3.0];
        let answer = postprocess(&outputs, &l, 0.5, Output::Softmax { top_k: 3 });
        assert_eq!(indices(&answer), [2, 4, 1], "equal outputs in index order");
        let numpy = [0.38680235f32, 0.38680235, 0.14229663];
        for (c, p) in answer.classes.iter().zip(numpy) {
            assert!((c.score - p).abs() < 1e-6, "{} vs {p}", c.score);
        }
        let all = postprocess(&outputs, &l, 0.5, Output::Softmax { top_k: 9 });
        assert_eq!(indices(&all), [2, 4, 1, 0, 3]);
        assert!((all.classes[3].score - 0.052348003).abs() < 1e-8);
        let total: f32 = all.classes.iter().map(|c| c.score).sum();
        assert!((total - 1.0).abs() < 1e-6);
        // Large logits do not overflow; NaN keeps none.
        let big = postprocess(
            &[1000.0, 999.0, 0.0],
            &labels(3),
            0.5,
            Output::Softmax { top_k: 1 },
        );
        assert_eq!(big.classes[0].index, 0);
        assert!((big.classes[0].score - 0.7310586).abs() < 1e-6);
        let nan = postprocess(
            &[1.0, f32::NAN],
            &labels(2),
            0.5,
            Output::Softmax { top_k: 1 },
        );
        assert_eq!(nan.prediction(), Prediction::NoCategories);
    }

    /// numpy's float32 sigmoid of 1, 2, 3 and 0.5: 0.7310586, 0.880797, 0.95257413, 0.62245935.
    #[test]
    fn sigmoid_threshold_in_the_seeds_order() {
        let l = labels(5);
        let outputs = [1.0, 2.0, -3.0, 0.5, f32::NAN];
        let answer = postprocess(&outputs, &l, 0.7, Output::Sigmoid);
        assert_eq!(indices(&answer), [0, 1]);
        // The second is one unit in the last place from numpy's, the f32 nearest the exact value.
        assert_eq!(answer.classes[0].score, 0.7310586);
        assert_eq!(answer.classes[1].score, 0.8807971);
        assert!((answer.classes[1].score - 0.880797).abs() < 1e-6);
        let none = postprocess(&[-1.0, 0.0], &labels(2), 0.5, Output::Sigmoid);
        assert_eq!(none.prediction(), Prediction::NoCategories);
    }

    #[test]
    fn scored_answers_add_the_classes() {
        let l = labels(3);
        let answer = postprocess(&[0.1, 2.5, 0.75], &l, 0.5, Output::Threshold);
        assert_eq!(
            serde_json::to_string(&answer.prediction()).unwrap(),
            r#"{"result":["c2","c1"],"status":1}"#
        );
        assert_eq!(
            serde_json::to_string(&answer.scored()).unwrap(),
            r#"{"result":["c2","c1"],"status":1,"classes":[{"index":2,"label":"c2","score":0.75},{"index":1,"label":"c1","score":2.5}]}"#
        );
        let none = postprocess(&[0.1, 0.2, 0.3], &l, 0.5, Output::Threshold);
        assert_eq!(
            serde_json::to_string(&none.scored()).unwrap(),
            r#"{"result":"No Categories","status":0,"classes":[]}"#
        );
    }

    #[test]
    fn serializes_as_the_seed() {
        let p = Prediction::Labels(vec!["Dog".into(), "Cat".into()]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"result":["Dog","Cat"],"status":1}"#
        );
        assert_eq!(
            serde_json::to_string(&Prediction::NoCategories).unwrap(),
            r#"{"result":"No Categories","status":0}"#
        );
    }
}
