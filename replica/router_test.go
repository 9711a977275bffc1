package replica

import (
	"math"
	"math/rand/v2"
	"testing"
)

func states(n, max int) []ReplicaState {
	out := make([]ReplicaState, n)
	for i := range out {
		out[i] = ReplicaState{Ready: true, MaxOngoing: max, Loaded: map[string]bool{}, Loading: map[string]bool{}}
	}
	return out
}

func TestPowerOfTwoChoicesSpreadsCallsEvenly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	reps := states(4, 0)
	for i := range reps {
		reps[i].Loaded["m"] = true
	}
	counts := make([]int, 4)
	// 1,000 calls, each lasting a while: ongoing counts rise and fall.
	var live []int
	for call := range 1000 {
		i := Pick("m", 0, reps, rng.IntN)
		counts[i]++
		reps[i].Ongoing++
		live = append(live, i)
		if call%3 == 2 { // calls finish at two thirds of the arrival rate
			j := live[0]
			live = live[1:]
			reps[j].Ongoing--
		}
	}
	for i, c := range counts {
		if math.Abs(float64(c)-250) > 50 {
			t.Errorf("replica %d got %d of 1000 calls, want 250 ± 20%%: %v", i, c, counts)
		}
	}
}

func TestModelAffinityWithCapacityToSpare(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	reps := states(4, 8)
	reps[1].Loaded["a"] = true
	reps[3].Loaded["a"] = true
	reps[0].Loaded["b"] = true
	onHolder := 0
	for range 1000 {
		i := Pick("a", 0, reps, rng.IntN)
		if reps[i].Loaded["a"] {
			onHolder++
		}
	}
	if onHolder < 900 {
		t.Fatalf("%d of 1000 requests for a landed on a replica holding it, want at least 900", onHolder)
	}
}

func TestABurstForAModelLoadedNowhereGoesToOneReplica(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	reps := states(4, 32)
	reps[0].Loaded["x"], reps[1].Loaded["y"], reps[2].Loaded["z"] = true, true, true
	// The router marks a replica as loading the model once it sends it the
	// first request (as Set does); the rest of the burst follows.
	chosen := map[int]int{}
	for range 20 {
		i := Pick("cold", 0, reps, rng.IntN)
		chosen[i]++
		reps[i].Loading["cold"] = true
		reps[i].Ongoing++
	}
	if len(chosen) != 1 || chosen[3] != 20 {
		t.Fatalf("a burst of 20 for a model loaded nowhere went to %v, want all to replica 3 (the one holding fewest models)", chosen)
	}
}

func TestAHotModelSpreadsToAReplicaWithRoom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	reps := states(3, 10)
	reps[0].Loaded["hot"], reps[0].Ongoing = true, 8 // at 80%
	reps[1].Loaded["other"], reps[1].Ongoing = true, 2
	reps[2].Ongoing = 9 // hot too, holds nothing
	if i := Pick("hot", 0, reps, rng.IntN); i != 1 {
		t.Fatalf("picked %d, want 1 (the holder is at 80%%, replica 1 has room)", i)
	}
	reps[0].Ongoing = 7 // below 80%: stays on its holder
	if i := Pick("hot", 0, reps, rng.IntN); i != 0 {
		t.Fatalf("picked %d, want the holder 0", i)
	}
}

func TestFullAndUnreadyReplicasAreSkipped(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	reps := states(3, 2)
	for i := range reps {
		reps[i].Loaded["m"] = true
	}
	reps[0].Ongoing = 2
	reps[1].Ready = false
	for range 50 {
		if i := Pick("m", 0, reps, rng.IntN); i != 2 {
			t.Fatalf("picked %d, want 2 (0 is full, 1 is not ready)", i)
		}
	}
	reps[2].Ongoing = 2
	if i := Pick("m", 0, reps, rng.IntN); i != -1 {
		t.Fatalf("picked %d with every replica full, want -1", i)
	}
}

func TestPrefixAffinityBreaksTies(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	reps := states(4, 0)
	for i := range reps {
		reps[i].Loaded["m"] = true
	}
	for _, prefix := range []uint64{5, 6, 7, 8} {
		want := int(prefix % 4)
		for range 20 {
			if i := Pick("m", prefix, reps, rng.IntN); i != want {
				t.Fatalf("prefix %d went to %d, want %d while all are equally loaded", prefix, i, want)
			}
		}
	}
	reps[1].Ongoing = 5 // busier: the prefix no longer wins
	if i := Pick("m", 5, reps, rng.IntN); i == 1 {
		t.Fatal("prefix affinity chose a busier replica")
	}
}
