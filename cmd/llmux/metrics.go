package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// deploymentCollector exports each deployment's replicas by state and the
// requests in flight on them, read from the status at scrape time.
type deploymentCollector struct {
	status func() []deploymentStatus
}

var (
	deploymentReplicasDesc = prometheus.NewDesc("llmux_deployment_replicas",
		"Replicas of a deployment by state (starting, ready, restarting, failed, draining, stopping, stopped).", []string{"deployment", "state"}, nil)
	deploymentOngoingDesc = prometheus.NewDesc("llmux_deployment_ongoing_requests",
		"Requests in flight on a deployment's replicas.", []string{"deployment"}, nil)
	deploymentRestartsDesc = prometheus.NewDesc("llmux_deployment_replica_restarts_total",
		"Restarts of a deployment's replicas after they exited or failed their health check.", []string{"deployment"}, nil)
)

func (d deploymentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- deploymentReplicasDesc
	ch <- deploymentOngoingDesc
	ch <- deploymentRestartsDesc
}

func (d deploymentCollector) Collect(ch chan<- prometheus.Metric) {
	for _, dep := range d.status() {
		states := map[string]int{}
		ongoing, restarts := 0, 0
		for _, r := range dep.Replicas {
			states[r.State]++
			ongoing += r.Ongoing
			restarts += r.Restarts
		}
		for state, n := range states {
			ch <- prometheus.MustNewConstMetric(deploymentReplicasDesc, prometheus.GaugeValue, float64(n), dep.Name, state)
		}
		ch <- prometheus.MustNewConstMetric(deploymentOngoingDesc, prometheus.GaugeValue, float64(ongoing), dep.Name)
		ch <- prometheus.MustNewConstMetric(deploymentRestartsDesc, prometheus.CounterValue, float64(restarts), dep.Name)
	}
}
