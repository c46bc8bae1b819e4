// Command pgplane-kube holds the parts of a single-node Kubernetes cluster
// for pgplane's tests in one binary, all from k8s.io/kubernetes, so that they
// share one build:
//
//	pgplane-kube apiserver --data-dir DIR --kubeconfig PATH [--node] ...
//	pgplane-kube controller-manager <kube-controller-manager flags>
//	pgplane-kube scheduler <kube-scheduler flags>
//	pgplane-kube kubelet <kubelet flags>
//
// apiserver is also the mode when the first argument is a flag, which is how
// the apiserver-only tests start it.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	_ "time/tzdata" // CronJob time zones in the controller manager

	"github.com/spf13/cobra"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		os.Exit(apiserverMain(args))
	}
	var cmd *cobra.Command
	switch args[0] {
	case "apiserver":
		os.Exit(apiserverMain(args[1:]))
	case "controller-manager":
		cmd = controllermanager.NewControllerManagerCommand()
	case "scheduler":
		cmd = scheduler.NewSchedulerCommand()
	case "kubelet":
		cmd = kubelet.NewKubeletCommand(context.Background())
	default:
		fmt.Fprintf(os.Stderr, "pgplane-kube: unknown mode %q (apiserver, controller-manager, scheduler, kubelet)\n", args[0])
		os.Exit(2)
	}
	cmd.SetArgs(args[1:])
	os.Exit(cli.Run(cmd))
}
