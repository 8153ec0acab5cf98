// Benchmarks of zone building (go test -bench BuildZone); not run by the test suite.

package gatewaydns

import (
	"fmt"
	"testing"
)

func benchFields() map[string]string {
	f := map[string]string{}
	for i := 0; i < 2000; i++ {
		f[fmt.Sprintf("h%d", i)] = fmt.Sprintf(`{"a":[{"ip":"10.0.%d.%d","ttl":3600}],"txt":[{"text":"owner %d","ttl":600}]}`, i/256, i%256, i)
	}
	return f
}

func BenchmarkBuildZoneCold(b *testing.B) {
	f := benchFields()
	for i := 0; i < b.N; i++ {
		buildZone("bench.test.", f, nil, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	}
}

func BenchmarkBuildZoneWarm(b *testing.B) {
	f := benchFields()
	prev := buildZone("bench.test.", f, nil, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buildZone("bench.test.", f, prev, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	}
}
