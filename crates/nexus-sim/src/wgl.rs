//! A small Wing–Gong linearizability checker (with Lowe's memoisation, as in WGL and
//! porcupine).
//!
//! Why not a crate: the maintained Rust tester, `stateright`'s
//! `LinearizabilityTester` (0.31), comes with the whole model checker — an actor
//! runtime, a web explorer (`tiny_http`), `dashmap`, `parking_lot`, `rand` 0.9 — for
//! the 200 lines we would use, and orders operations by per-thread completion rather
//! than by the simulator's clock, so every retry of a client would need a fresh thread
//! id to stay "in flight"; its extracted copy, `consistency_model`, is a 0.0.0 release
//! with no history since. The histories here are small (one Intent's calls, tens of
//! operations), so the textbook search with a memo of (linearized set, state) is
//! enough, and it takes operations whose outcome is unknown directly.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: a state machine whose [`step`](Model::step) says what
/// an operation returns and which state follows.
pub trait Model: Clone + Eq + Hash {
    /// An operation (with its arguments).
    type Op;
    /// What an operation returns.
    type Ret: PartialEq;
    /// Applies `op` to the state: the next state and what `op` returns.
    fn step(&self, op: &Self::Op) -> (Self, Self::Ret);
}

/// One operation of a concurrent history.
#[derive(Debug, Clone)]
pub struct Entry<O, R> {
    /// When it was invoked (any clock that orders events).
    pub call: u64,
    /// When it returned, and what it returned; `None`: the outcome is unknown (a lost
    /// answer, a 5xx) — it took effect at some point after `call`, or never.
    pub ret: Option<(u64, R)>,
    /// The operation.
    pub op: O,
}

/// Searches for a linearization of `history` starting from `init`: an order of all
/// operations with a known outcome, and of any subset of those with an unknown one,
/// that respects real time (an operation that returned before another was invoked
/// comes first) and in which every known outcome is what the model returns. Returns
/// the indices of `history` in that order, or `None` when there is none.
pub fn linearize<M: Model>(init: &M, history: &[Entry<M::Op, M::Ret>]) -> Option<Vec<usize>> {
    let n = history.len();
    let words = n.div_ceil(64).max(1);
    let mut search = Search {
        history,
        done: vec![0u64; words],
        order: Vec::with_capacity(n),
        memo: HashSet::new(),
        required: history.iter().filter(|e| e.ret.is_some()).count(),
    };
    search.dfs(init, 0).then_some(search.order)
}

struct Search<'a, M: Model> {
    history: &'a [Entry<M::Op, M::Ret>],
    done: Vec<u64>,
    order: Vec<usize>,
    memo: HashSet<(Vec<u64>, M)>,
    required: usize,
}

impl<M: Model> Search<'_, M> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// `known`: how many operations with a known outcome are linearized.
    fn dfs(&mut self, state: &M, known: usize) -> bool {
        if known == self.required {
            return true;
        }
        if !self.memo.insert((self.done.clone(), state.clone())) {
            return false;
        }
        // An operation may come next only if no pending operation returned before it
        // was invoked.
        let horizon = (0..self.history.len())
            .filter(|&i| !self.is_done(i))
            .filter_map(|i| self.history[i].ret.as_ref().map(|(t, _)| *t))
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.history.len() {
            let entry = &self.history[i];
            if self.is_done(i) || entry.call >= horizon {
                continue;
            }
            let (next, ret) = state.step(&entry.op);
            let counts = match &entry.ret {
                Some((_, want)) if *want != ret => continue,
                Some(_) => 1,
                None => 0,
            };
            self.flip(i);
            self.order.push(i);
            if self.dfs(&next, known + counts) {
                return true;
            }
            self.order.pop();
            self.flip(i);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of one integer: write(v) returns 0, read returns the value.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Reg(u8);

    #[derive(Debug)]
    enum Op {
        Write(u8),
        Read,
    }

    impl Model for Reg {
        type Op = Op;
        type Ret = u8;
        fn step(&self, op: &Op) -> (Self, u8) {
            match op {
                Op::Write(v) => (Reg(*v), 0),
                Op::Read => (self.clone(), self.0),
            }
        }
    }

    fn e(call: u64, ret: Option<(u64, u8)>, op: Op) -> Entry<Op, u8> {
        Entry { call, ret, op }
    }

    #[test]
    fn concurrent_write_may_come_before_a_read() {
        let h = [
            e(0, Some((10, 0)), Op::Write(1)),
            e(1, Some((5, 1)), Op::Read),
        ];
        assert_eq!(linearize(&Reg(0), &h), Some(vec![0, 1]));
    }

    #[test]
    fn a_read_after_a_write_returned_must_see_it() {
        let h = [
            e(0, Some((2, 0)), Op::Write(1)),
            e(3, Some((5, 0)), Op::Read),
        ];
        assert_eq!(linearize(&Reg(0), &h), None);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let never = [e(0, None, Op::Write(1)), e(3, Some((5, 0)), Op::Read)];
        assert!(linearize(&Reg(0), &never).is_some());
        let late = [
            e(0, None, Op::Write(1)),
            e(3, Some((5, 0)), Op::Read),
            e(6, Some((7, 1)), Op::Read),
        ];
        assert_eq!(linearize(&Reg(0), &late), Some(vec![1, 0, 2]));
        let not_before_its_call = [e(0, Some((1, 1)), Op::Read), e(2, None, Op::Write(1))];
        assert_eq!(linearize(&Reg(0), &not_before_its_call), None);
    }
}
