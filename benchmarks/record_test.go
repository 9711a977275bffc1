package benchmarks

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// recordShell runs script in bash with record.sh sourced under set -euo
// pipefail and RECORD_DIR set to dir, and returns its combined output and
// exit status.
func recordShell(t *testing.T, dir, script string) (string, int) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found; record.sh is not tested")
	}
	cmd := exec.Command(bash, "-c", "set -euo pipefail\nsource ./record.sh\n"+script)
	cmd.Env = append(os.Environ(), "RECORD_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// commands returns commands.tsv's rows after the header, split in fields.
func commands(t *testing.T, dir string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(readFile(t, filepath.Join(dir, "commands.tsv")), "\n"), "\n")
	if lines[0] != "name\tstart\tend\tstatus\tcommand" {
		t.Fatalf("commands.tsv header %q", lines[0])
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return rows
}

func TestRecordInitWritesMachineOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rec")
	if out, code := recordShell(t, dir, "record_init"); code != 0 {
		t.Fatalf("record_init: status %d\n%s", code, out)
	}
	machine := readFile(t, filepath.Join(dir, "machine.txt"))
	for _, re := range []string{
		`(?m)^time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`,
		`(?m)^commit: ([0-9a-f]{40}|unknown)$`,
		`(?m)^dirty: (yes|no)$`,
		`(?m)^cpu: .+$`,
		`(?m)^cpu flags: .+$`,
		`(?m)^cores: \d+$`,
		`(?m)^memory: .+$`,
		`(?m)^kernel: .+$`,
		`(?m)^go: .+$`,
		`(?m)^llmux: .+$`,
	} {
		if !regexp.MustCompile(re).MatchString(machine) {
			t.Errorf("machine.txt does not match %s:\n%s", re, machine)
		}
	}
	// A second record_init in the same directory leaves machine.txt be.
	marked := machine + "marker\n"
	if err := os.WriteFile(filepath.Join(dir, "machine.txt"), []byte(marked), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := recordShell(t, dir, "record_init; record_init"); code != 0 {
		t.Fatalf("record_init again: status %d\n%s", code, out)
	}
	if got := readFile(t, filepath.Join(dir, "machine.txt")); got != marked {
		t.Errorf("machine.txt rewritten:\n%s", got)
	}
	if rows := commands(t, dir); len(rows) != 0 {
		t.Errorf("commands.tsv has rows %q", rows)
	}
}

func TestRecordKeepsOutputVerbatim(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, `record_init
record verb sh -c 'printf "out 1\n"; printf "err\t2\r\n" >&2; printf "no newline"; exit 3' 'an arg' || echo "status=$?"
record ok true`)
	if code != 0 || !strings.Contains(out, "status=3") {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	if got, want := readFile(t, filepath.Join(dir, "verb.txt")), "out 1\nerr\t2\r\nno newline"; got != want {
		t.Errorf("verb.txt: got %q, want %q", got, want)
	}
	rows := commands(t, dir)
	if len(rows) != 2 {
		t.Fatalf("commands.tsv rows %q, want 2", rows)
	}
	iso := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	r := rows[0]
	if len(r) != 5 || r[0] != "verb" || !iso.MatchString(r[1]) || !iso.MatchString(r[2]) || r[3] != "3" {
		t.Fatalf("row %q", r)
	}
	if !strings.HasPrefix(r[4], "sh -c ") || !strings.HasSuffix(r[4], `an\ arg`) {
		t.Errorf("command %q", r[4])
	}
	if rows[1][0] != "ok" || rows[1][3] != "0" || rows[1][4] != "true" {
		t.Errorf("row %q", rows[1])
	}
}

func TestRecordNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, `record_init
record once echo first
record once echo second || echo "refused=$?"
touch "$RECORD_DIR/made.txt"
record made echo over || echo "refused=$?"
record 'bad/name' true || echo "refused=$?"`)
	if code != 0 || strings.Count(out, "refused=2") != 3 {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	if got := readFile(t, filepath.Join(dir, "once.txt")); got != "first\n" {
		t.Errorf("once.txt: %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "made.txt")); got != "" {
		t.Errorf("made.txt: %q", got)
	}
	if rows := commands(t, dir); len(rows) != 1 || rows[0][0] != "once" {
		t.Errorf("commands.tsv rows %q", rows)
	}
}

func TestRecordFailureStopsSetE(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, "record_init\nrecord fails false\necho reached")
	if code != 1 || strings.Contains(out, "reached") {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	if rows := commands(t, dir); len(rows) != 1 || rows[0][3] != "1" {
		t.Errorf("commands.tsv rows %q", rows)
	}
	if _, code := recordShell(t, t.TempDir(), "record x true"); code != 2 {
		t.Errorf("record before record_init: status %d, want 2", code)
	}
}

func TestInterleave(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, `record_init
interleave 3 a 'echo "A $PAIR $RECORD_DIR"' b 'echo "B $PAIR"'`)
	if code != 0 {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	var names []string
	for _, r := range commands(t, dir) {
		names = append(names, r[0])
		if r[3] != "0" || !strings.HasPrefix(r[4], "bash -c ") {
			t.Errorf("row %q", r)
		}
	}
	if got, want := strings.Join(names, " "), "a-1 b-1 a-2 b-2 a-3 b-3"; got != want {
		t.Errorf("order: got %s, want %s", got, want)
	}
	if got := readFile(t, filepath.Join(dir, "a-2.txt")); got != "A 2 "+dir+"\n" {
		t.Errorf("a-2.txt: %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "b-3.txt")); got != "B 3\n" {
		t.Errorf("b-3.txt: %q", got)
	}
	// The same names again: refused before anything runs.
	if out, code := recordShell(t, dir, "record_init\ninterleave 3 c true a true"); code != 2 || !strings.Contains(out, "a-1.txt already exists") {
		t.Errorf("names taken: status %d, output:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "c-1.txt")); err == nil {
		t.Error("c-1 ran although a-1 was taken")
	}
}

// TestInterleaveAlternateOrder: INTERLEAVE_ORDER=alternate runs even
// pairs B first; the names still say which configuration ran.
func TestInterleaveAlternateOrder(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, `record_init
INTERLEAVE_ORDER=alternate interleave 4 a 'echo "A $PAIR"' b 'echo "B $PAIR"'`)
	if code != 0 {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	var names []string
	for _, r := range commands(t, dir) {
		names = append(names, r[0])
	}
	if got, want := strings.Join(names, " "), "a-1 b-1 b-2 a-2 a-3 b-3 b-4 a-4"; got != want {
		t.Errorf("order: got %s, want %s", got, want)
	}
	if got := readFile(t, filepath.Join(dir, "a-2.txt")); got != "A 2\n" {
		t.Errorf("a-2.txt: %q", got)
	}
	if out, code := recordShell(t, t.TempDir(), "record_init\nINTERLEAVE_ORDER=ba interleave 3 a true b true"); code != 2 || !strings.Contains(out, "INTERLEAVE_ORDER") {
		t.Errorf("an unknown order: status %d, output:\n%s", code, out)
	}
}

func TestInterleaveRefusesFewPairs(t *testing.T) {
	dir := t.TempDir()
	out, code := recordShell(t, dir, "record_init\ninterleave 2 a true b true")
	if code != 2 || !strings.Contains(out, "at least 3") {
		t.Fatalf("2 pairs: status %d, output:\n%s", code, out)
	}
	if rows := commands(t, dir); len(rows) != 0 {
		t.Fatalf("ran %q", rows)
	}
	out, code = recordShell(t, dir, "record_init\nALLOW_FEWER_PAIRS=1 interleave 1 a true b true")
	if rows := commands(t, dir); code != 0 || len(rows) != 2 {
		t.Fatalf("ALLOW_FEWER_PAIRS=1: status %d, rows %q, output:\n%s", code, rows, out)
	}
	// A failing run stops the comparison with its status.
	out, code = recordShell(t, dir, "record_init\ninterleave 3 x 'exit 4' y true")
	if code != 4 || !strings.Contains(out, "stopping") {
		t.Fatalf("failing A: status %d, output:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "y-1.txt")); err == nil {
		t.Error("y-1 ran after x-1 failed")
	}
}

// TestSummarizeBatches: per-batch A/B ratios and their median from both
// output formats, and a refusal of mismatched batches.
func TestSummarizeBatches(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		// the native harness's format
		"h-1.txt": "threads=2\nbatch=1 tok/s=300.0\nbatch=4 tok/s=200\n",
		"h-2.txt": "batch=1 tok/s=280\nbatch=4 tok/s=240\n",
		"h-3.txt": "batch=1 tok/s=290\nbatch=4 tok/s=220\n",
		"g-1.txt": "goos: linux\nBenchmarkDecode/model=bench/kv=perseq/batch=1-2 \t       1\t3817 ns/op\t       150.0 tok/s\nBenchmarkDecode/model=bench/kv=perseq/batch=4-2 \t       1\t3817 ns/op\t       100 tok/s\nPASS\n",
		"g-2.txt": "BenchmarkDecode/model=bench/kv=perseq/batch=1-2 1 1 ns/op 200 tok/s\nBenchmarkDecode/model=bench/kv=perseq/batch=4-2 1 1 ns/op 200 tok/s\n",
		"g-3.txt": "BenchmarkDecode/model=bench/kv=perseq/batch=1-2 1 1 ns/op 290 tok/s\nBenchmarkDecode/model=bench/kv=perseq/batch=4-2 1 1 ns/op 110 tok/s\n",
		"x-1.txt": "batch=2 tok/s=1\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, code := recordShell(t, dir, "summarize_batches h g")
	if code != 0 {
		t.Fatalf("status %d, output:\n%s", code, out)
	}
	want := "batch=1 h/g pairs=2 1.4 1 median=1.400 range=1.000-2.000\n" +
		"batch=4 h/g pairs=2 1.2 2 median=2.000 range=1.200-2.000\n"
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	if out, code := recordShell(t, dir, "summarize_batches h x"); code == 0 || !strings.Contains(out, "paired with batch") {
		t.Errorf("mismatched batches: status %d, output:\n%s", code, out)
	}
}
