// Package metrictest reads samples out of a parsed Prometheus text exposition (baton's
// /metrics), for the tests of control and of the integration suite. It is not part of baton.
package metrictest

import dto "github.com/prometheus/client_model/go"

// Value returns the value of the first sample of family fam whose labels include every
// name, value pair of kv (a counter's or a gauge's); -1 when there is none.
func Value(fams map[string]*dto.MetricFamily, fam string, kv ...string) float64 {
	f := fams[fam]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(kv); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || (lp.GetName() == kv[i] && lp.GetValue() == kv[i+1])
			}
			if !found {
				continue next
			}
		}
		if f.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}
