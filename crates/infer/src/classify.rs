//! The seed's postprocessing: threshold the raw outputs, sort, and name the classes.

use serde::ser::{Serialize, SerializeStruct, Serializer};

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
    let mut kept: Vec<(usize, f32)> = outputs
        .iter()
        .take(labels.len())
        .copied()
        .enumerate()
        .filter(|&(_, v)| v > threshold)
        .collect();
    if kept.is_empty() {
        return Prediction::NoCategories;
    }
    // Stable; kept values are never NaN, so partial_cmp always answers.
    kept.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    Prediction::Labels(
        kept.iter()
            .map(|&(i, _)| labels.name(i).to_owned())
            .collect(),
    )
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
