package replica

// ReplicaState is what the router knows of one replica.
type ReplicaState struct {
	Ready bool
	// Ongoing requests sent to it and not yet finished; MaxOngoing bounds
	// them (0: no bound).
	Ongoing, MaxOngoing int
	// Loaded and Loading name the models it holds and the ones it is
	// loading (including loads this router caused and has not yet seen
	// finish).
	Loaded, Loading map[string]bool
}

func (r ReplicaState) room() bool { return r.Ready && (r.MaxOngoing <= 0 || r.Ongoing < r.MaxOngoing) }

// hot reports whether the replica is at 80% or more of its bound.
func (r ReplicaState) hot() bool { return r.MaxOngoing > 0 && r.Ongoing*5 >= r.MaxOngoing*4 }

// Pick chooses the replica for a request for model, or -1 when none is
// ready with room. It is a pure function: rnd(n) returns a number in
// [0, n) and prefix is a hash of the prompt's beginning (0: none).
//
//   - Replicas that hold the model come first, then those loading it, then
//     the one holding the fewest models (so a model loaded nowhere is
//     loaded by one replica, and a burst for it follows that replica's
//     load instead of starting loads everywhere).
//   - Among equals, power of two choices on ongoing requests; a tie goes to
//     the replica the prompt's prefix hashes to, so requests sharing a
//     prefix meet its KV cache.
//   - A hot model spreads: when every replica holding it is at 80% or more
//     of its bound and another has room below that, the request goes to
//     one of the others (which then loads the model).
func Pick(model string, prefix uint64, reps []ReplicaState, rnd func(int) int) int {
	var holders, loading, others []int
	for i, r := range reps {
		if !r.room() {
			continue
		}
		switch {
		case r.Loaded[model]:
			holders = append(holders, i)
		case r.Loading[model]:
			loading = append(loading, i)
		default:
			others = append(others, i)
		}
	}
	if len(holders) > 0 {
		allHot := true
		for _, i := range holders {
			if !reps[i].hot() {
				allHot = false
				break
			}
		}
		if allHot {
			var cool []int
			for _, i := range append(loading, others...) {
				if !reps[i].hot() {
					cool = append(cool, i)
				}
			}
			if len(cool) > 0 {
				return twoChoices(cool, prefix, reps, rnd)
			}
		}
		return twoChoices(holders, prefix, reps, rnd)
	}
	if len(loading) > 0 {
		return twoChoices(loading, prefix, reps, rnd)
	}
	if len(others) == 0 {
		return -1
	}
	// Loaded nowhere: the replica holding the fewest models loads it.
	fewest := -1
	var least []int
	for _, i := range others {
		n := len(reps[i].Loaded) + len(reps[i].Loading)
		switch {
		case fewest < 0 || n < fewest:
			fewest, least = n, []int{i}
		case n == fewest:
			least = append(least, i)
		}
	}
	return twoChoices(least, prefix, reps, rnd)
}

// twoChoices samples two candidates and keeps the one with fewer ongoing
// requests, unless the replica the prompt's prefix hashes to is at least
// as free as the better of the two (prefix affinity as a tie-breaker).
func twoChoices(cands []int, prefix uint64, reps []ReplicaState, rnd func(int) int) int {
	n := len(cands)
	if n == 1 {
		return cands[0]
	}
	i, j := rnd(n), rnd(n-1)
	if j >= i {
		j++
	}
	best := cands[i]
	if reps[cands[j]].Ongoing < reps[best].Ongoing {
		best = cands[j]
	}
	if prefix != 0 {
		if t := cands[prefix%uint64(n)]; reps[t].Ongoing <= reps[best].Ongoing {
			return t
		}
	}
	return best
}
