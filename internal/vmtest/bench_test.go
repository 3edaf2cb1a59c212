package vmtest

import "testing"

func TestBenchLine(t *testing.T) {
	r, ok := BenchLine("guest| BENCH install directord_ms=812.5 ipvsadm_ms=700.0 ratio=1.161 change_ops=1 change_ms=41.20 note=x", "install")
	if !ok || r["directord_ms"] != 812.5 || r["ipvsadm_ms"] != 700 || r["ratio"] != 1.161 ||
		r["change_ops"] != 1 || r["change_ms"] != 41.2 || len(r) != 5 {
		t.Errorf("BenchLine = %v, %v", r, ok)
	}
	if _, ok := BenchLine("BENCH rep 0 directord_ms=1", "install"); ok {
		t.Error("a per-repetition line parsed as the result")
	}
	if _, ok := BenchLine("BENCH run lb1 cpu=1", "checks"); ok {
		t.Error("another benchmark's line parsed as the result")
	}
	if _, ok := BenchLine("BENCH checks note=x", "checks"); ok {
		t.Error("a line without numbers parsed as a result")
	}
}
