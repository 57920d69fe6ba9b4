//! Structural JSON diff.
//!
//! Two documents are walked together. The rules, from SPEC §4:
//! - object key order never matters;
//! - numbers compare numerically (`1` equals `1.0`) within
//!   `|a − b| ≤ float_tolerance × max(1, |a|, |b|)`;
//! - `null` and an absent key differ, and `10` and `"10"` differ;
//! - arrays are compared index by index, except those selected by
//!   `unordered_arrays`, which are compared as multisets;
//! - locations selected by `ignore_json` in either document are skipped.
//!
//! The user paths are located once per document (concrete segment lists),
//! and the walker keeps one current path per side: they are equal except
//! while probing whether an element of an unordered array equals another
//! element at a different index.

use std::collections::{HashMap, HashSet};

use serde_json::{Number, Value};

use super::path::{render, PathList, Seg};
use super::{DiffKind, Difference};

/// Most element comparisons spent matching the non-identical leftovers of
/// one unordered array (quadratic in their number); past it the leftovers
/// are reported unmatched rather than stalling the comparison.
const MAX_PROBES: usize = 1_000_000;

/// The JSON part of a route's rules.
pub(crate) struct JsonRules<'a> {
    pub ignore: &'a PathList,
    pub unordered: &'a PathList,
    pub float_tolerance: f64,
}

/// Diffs two JSON documents under `rules`.
pub(crate) fn diff(legacy: &Value, candidate: &Value, rules: &JsonRules<'_>) -> Vec<Difference> {
    let located = Located {
        ignore: [
            locate(rules.ignore, legacy),
            locate(rules.ignore, candidate),
        ],
        unordered: [
            locate(rules.unordered, legacy),
            locate(rules.unordered, candidate),
        ],
    };
    let mut walk = Walk {
        located: &located,
        tolerance: rules.float_tolerance,
        probe: false,
        out: Vec::new(),
    };
    // Reporting mode never stops early.
    let _ = walk.value(legacy, candidate, &mut Vec::new(), &mut Vec::new());
    walk.out
}

fn locate(list: &PathList, doc: &Value) -> HashSet<Vec<Seg>> {
    if list.is_empty() {
        HashSet::new()
    } else {
        list.locate(doc)
    }
}

/// Locations selected by the user paths, `[legacy, candidate]`.
struct Located {
    ignore: [HashSet<Vec<Seg>>; 2],
    unordered: [HashSet<Vec<Seg>>; 2],
}

impl Located {
    fn hit(sets: &[HashSet<Vec<Seg>>; 2], lp: &[Seg], cp: &[Seg]) -> bool {
        (!sets[0].is_empty() && sets[0].contains(lp))
            || (!sets[1].is_empty() && sets[1].contains(cp))
    }
}

/// Signals that a probe found a difference and the walk can stop.
struct Stop;

struct Walk<'a> {
    located: &'a Located,
    tolerance: f64,
    /// Probing: stop at the first difference instead of recording it.
    probe: bool,
    out: Vec<Difference>,
}

impl Walk<'_> {
    /// Records a difference at `path` (or stops, when probing).
    fn report(
        &mut self,
        path: &[Seg],
        legacy: Option<&Value>,
        candidate: Option<&Value>,
    ) -> Result<(), Stop> {
        if self.probe {
            return Err(Stop);
        }
        let path = render(path);
        self.out.push(match (legacy, candidate) {
            (Some(l), Some(c)) => Difference::changed(DiffKind::Body, path, l.clone(), c.clone()),
            (l, c) => Difference::one_sided(DiffKind::Body, path, l.cloned(), c.cloned()),
        });
        Ok(())
    }

    /// Compares the values at `lp` (legacy) and `cp` (candidate).
    fn value(
        &mut self,
        l: &Value,
        c: &Value,
        lp: &mut Vec<Seg>,
        cp: &mut Vec<Seg>,
    ) -> Result<(), Stop> {
        if Located::hit(&self.located.ignore, lp, cp) {
            return Ok(());
        }
        match (l, c) {
            (Value::Object(lo), Value::Object(co)) => {
                for (k, lv) in lo {
                    lp.push(Seg::Key(k.clone()));
                    cp.push(Seg::Key(k.clone()));
                    let r = match co.get(k) {
                        Some(cv) => self.value(lv, cv, lp, cp),
                        None => self.one_sided(lp, cp, Some(lv), None),
                    };
                    lp.pop();
                    cp.pop();
                    r?;
                }
                for (k, cv) in co.iter().filter(|(k, _)| !lo.contains_key(*k)) {
                    lp.push(Seg::Key(k.clone()));
                    cp.push(Seg::Key(k.clone()));
                    let r = self.one_sided(lp, cp, None, Some(cv));
                    lp.pop();
                    cp.pop();
                    r?;
                }
                Ok(())
            }
            (Value::Array(la), Value::Array(ca)) => {
                if Located::hit(&self.located.unordered, lp, cp) {
                    self.unordered(la, ca, lp, cp)
                } else {
                    self.ordered(la, ca, lp, cp)
                }
            }
            (Value::Number(a), Value::Number(b)) => {
                if numbers_equal(a, b, self.tolerance) {
                    Ok(())
                } else {
                    self.report(lp, Some(l), Some(c))
                }
            }
            _ if l == c => Ok(()),
            _ => self.report(lp, Some(l), Some(c)),
        }
    }

    /// A value present on one side only, unless that location is ignored.
    fn one_sided(
        &mut self,
        lp: &[Seg],
        cp: &[Seg],
        l: Option<&Value>,
        c: Option<&Value>,
    ) -> Result<(), Stop> {
        if Located::hit(&self.located.ignore, lp, cp) {
            return Ok(());
        }
        let path = if l.is_some() { lp } else { cp };
        self.report(path, l, c)
    }

    /// Index by index; extra or missing elements at their own index.
    fn ordered(
        &mut self,
        la: &[Value],
        ca: &[Value],
        lp: &mut Vec<Seg>,
        cp: &mut Vec<Seg>,
    ) -> Result<(), Stop> {
        for i in 0..la.len().max(ca.len()) {
            lp.push(Seg::Index(i));
            cp.push(Seg::Index(i));
            let r = match (la.get(i), ca.get(i)) {
                (Some(l), Some(c)) => self.value(l, c, lp, cp),
                (l, c) => self.one_sided(lp, cp, l, c),
            };
            lp.pop();
            cp.pop();
            r?;
        }
        Ok(())
    }

    /// As multisets. Identical elements are paired first (by their
    /// canonical text, in linear time); each remaining legacy element is
    /// then matched with an equal, not yet matched candidate element under
    /// the rules (the one at the same index first), within a budget of
    /// [`MAX_PROBES`] element comparisons. What is left is reported at its
    /// own side's index: legacy leftovers as `missing_in_candidate`,
    /// candidate leftovers as `extra_in_candidate`.
    fn unordered(
        &mut self,
        la: &[Value],
        ca: &[Value],
        lp: &mut Vec<Seg>,
        cp: &mut Vec<Seg>,
    ) -> Result<(), Stop> {
        let mut used = vec![false; ca.len()];
        let mut left = Vec::new();
        // Identical values are equal under any rules.
        let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
        for (j, c) in ca.iter().enumerate().rev() {
            by_text.entry(c.to_string()).or_default().push(j);
        }
        for (i, l) in la.iter().enumerate() {
            match by_text.get_mut(&l.to_string()).and_then(Vec::pop) {
                Some(j) => used[j] = true,
                None => left.push(i),
            }
        }
        let unused = used.iter().filter(|u| !**u).count();
        let mut missing = Vec::new();
        if left.len().saturating_mul(unused) > MAX_PROBES {
            missing = left;
        } else {
            for i in left {
                let order = std::iter::once(i).chain((0..ca.len()).filter(move |j| *j != i));
                let found = order
                    .filter(|j| *j < ca.len() && !used[*j])
                    .find(|j| self.probe_equal(&la[i], &ca[*j], lp, cp, i, *j));
                match found {
                    Some(j) => used[j] = true,
                    None => missing.push(i),
                }
            }
        }
        for i in missing {
            lp.push(Seg::Index(i));
            let r = self.one_sided(lp, cp, Some(&la[i]), None);
            lp.pop();
            r?;
        }
        for (j, c) in ca.iter().enumerate().filter(|(j, _)| !used[*j]) {
            cp.push(Seg::Index(j));
            let r = self.one_sided(lp, cp, None, Some(c));
            cp.pop();
            r?;
        }
        Ok(())
    }

    /// True when legacy element `i` equals candidate element `j` under the
    /// same rules (ignores and tolerance included).
    fn probe_equal(
        &self,
        l: &Value,
        c: &Value,
        lp: &mut Vec<Seg>,
        cp: &mut Vec<Seg>,
        i: usize,
        j: usize,
    ) -> bool {
        let mut probe = Walk {
            located: self.located,
            tolerance: self.tolerance,
            probe: true,
            out: Vec::new(),
        };
        lp.push(Seg::Index(i));
        cp.push(Seg::Index(j));
        let equal = probe.value(l, c, lp, cp).is_ok();
        lp.pop();
        cp.pop();
        equal
    }
}

/// Numeric equality with a relative tolerance; integers compare exactly
/// first so that large ids are not rounded through `f64` when the
/// tolerance is zero.
pub(crate) fn numbers_equal(a: &Number, b: &Number, tolerance: f64) -> bool {
    let ints = (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64());
    match ints {
        (Some(x), Some(y), _, _) if x == y => return true,
        (_, _, Some(x), Some(y)) if x == y => return true,
        _ => {}
    }
    let both_integers = (a.is_i64() || a.is_u64()) && (b.is_i64() || b.is_u64());
    if both_integers && tolerance == 0.0 {
        return false;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= tolerance * 1f64.max(x.abs()).max(y.abs()),
        _ => false,
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
