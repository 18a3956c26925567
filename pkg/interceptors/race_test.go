//go:build race

package interceptors_test

// raceEnabled: the race detector adds allocations of its own, so allocation counts are not checked.
const raceEnabled = true
