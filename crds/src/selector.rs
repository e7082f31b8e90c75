//! Label selector evaluation over Node labels (the semantics of
//! `metav1.LabelSelector`: matchLabels AND every matchExpression).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// A selector that cannot be evaluated; the API server rejects these too,
/// but the operator re-checks because stored objects may predate a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "matchExpressions[{index}] (key {key:?}): unknown operator {operator:?}; use In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator {
        index: usize,
        key: String,
        operator: String,
    },
    #[error(
        "matchExpressions[{index}] (key {key:?}): operator {operator} needs at least one value"
    )]
    MissingValues {
        index: usize,
        key: String,
        operator: String,
    },
    #[error("matchExpressions[{index}] (key {key:?}): operator {operator} must not have values")]
    UnexpectedValues {
        index: usize,
        key: String,
        operator: String,
    },
}

/// Whether `selector` selects an object with `labels`. `None` and an empty
/// selector select everything, as for a policy's `nodeSelector`.
pub fn selects(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    // Evaluate every expression for validity before short-circuiting, so a
    // broken selector is reported even when matchLabels already fails.
    let mut matched = true;
    for (index, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        if !requirement_matches(index, requirement, labels)? {
            matched = false;
        }
    }
    if let Some(match_labels) = &selector.match_labels {
        matched &= match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
    }
    Ok(matched)
}

fn requirement_matches(
    index: usize,
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let values = requirement.values.as_deref().unwrap_or_default();
    let key = &requirement.key;
    let operator = requirement.operator.as_str();
    let needs_values = |ok: bool| -> Result<(), SelectorError> {
        match (ok, values.is_empty()) {
            (true, true) => Err(SelectorError::MissingValues {
                index,
                key: key.clone(),
                operator: operator.to_owned(),
            }),
            (false, false) => Err(SelectorError::UnexpectedValues {
                index,
                key: key.clone(),
                operator: operator.to_owned(),
            }),
            _ => Ok(()),
        }
    };
    match operator {
        "In" => {
            needs_values(true)?;
            Ok(labels.get(key).is_some_and(|v| values.contains(v)))
        }
        "NotIn" => {
            needs_values(true)?;
            // Like Kubernetes: a missing label satisfies NotIn.
            Ok(labels.get(key).is_none_or(|v| !values.contains(v)))
        }
        "Exists" => {
            needs_values(false)?;
            Ok(labels.contains_key(key))
        }
        "DoesNotExist" => {
            needs_values(false)?;
            Ok(!labels.contains_key(key))
        }
        _ => Err(SelectorError::UnknownOperator {
            index,
            key: key.clone(),
            operator: operator.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| (*v).to_owned()).collect())
            },
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: if match_labels.is_empty() {
                None
            } else {
                Some(labels(match_labels))
            },
            match_expressions: if exprs.is_empty() { None } else { Some(exprs) },
        }
    }

    #[test]
    fn none_and_empty_select_everything() {
        let node = labels(&[("a", "b")]);
        assert_eq!(selects(None, &node), Ok(true));
        assert_eq!(selects(Some(&LabelSelector::default()), &node), Ok(true));
        assert_eq!(
            selects(Some(&LabelSelector::default()), &labels(&[])),
            Ok(true)
        );
    }

    #[test]
    fn match_labels_require_every_pair() {
        let sel = selector(&[("pool", "gpu"), ("zone", "a")], vec![]);
        assert_eq!(
            selects(Some(&sel), &labels(&[("pool", "gpu"), ("zone", "a")])),
            Ok(true)
        );
        assert_eq!(selects(Some(&sel), &labels(&[("pool", "gpu")])), Ok(false));
        assert_eq!(
            selects(Some(&sel), &labels(&[("pool", "gpu"), ("zone", "b")])),
            Ok(false)
        );
    }

    #[test]
    fn operators() {
        let node = labels(&[("pool", "batch"), ("kubernetes.io/os", "linux")]);
        let check = |e| selects(Some(&selector(&[], vec![e])), &node);
        assert_eq!(check(expr("pool", "In", &["batch", "web"])), Ok(true));
        assert_eq!(check(expr("pool", "In", &["web"])), Ok(false));
        assert_eq!(check(expr("missing", "In", &["x"])), Ok(false));
        assert_eq!(check(expr("pool", "NotIn", &["web"])), Ok(true));
        assert_eq!(check(expr("pool", "NotIn", &["batch"])), Ok(false));
        assert_eq!(check(expr("missing", "NotIn", &["x"])), Ok(true));
        assert_eq!(check(expr("kubernetes.io/os", "Exists", &[])), Ok(true));
        assert_eq!(check(expr("missing", "Exists", &[])), Ok(false));
        assert_eq!(check(expr("missing", "DoesNotExist", &[])), Ok(true));
        assert_eq!(check(expr("pool", "DoesNotExist", &[])), Ok(false));
    }

    #[test]
    fn labels_and_expressions_combine_with_and() {
        let sel = selector(&[("pool", "batch")], vec![expr("zone", "In", &["a", "b"])]);
        assert_eq!(
            selects(Some(&sel), &labels(&[("pool", "batch"), ("zone", "a")])),
            Ok(true)
        );
        assert_eq!(
            selects(Some(&sel), &labels(&[("pool", "batch"), ("zone", "c")])),
            Ok(false)
        );
        assert_eq!(
            selects(Some(&sel), &labels(&[("pool", "web"), ("zone", "a")])),
            Ok(false)
        );
    }

    #[test]
    fn malformed_requirements_are_errors() {
        let node = labels(&[("pool", "batch")]);
        let check = |e| selects(Some(&selector(&[], vec![e])), &node);
        assert!(matches!(
            check(expr("pool", "Equals", &["batch"])),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            check(expr("pool", "In", &[])),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            check(expr("pool", "Exists", &["x"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
        // Reported even when matchLabels alone would already reject the node.
        let sel = selector(&[("pool", "web")], vec![expr("pool", "Bogus", &[])]);
        assert!(selects(Some(&sel), &node).is_err());
    }
}
