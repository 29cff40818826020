// Command coredns is the cluster DNS of the cluster test tier (tests/cluster):
// CoreDNS, pinned in go.mod, built with only the plugins the tier's Corefile
// uses. The release binary links every plugin (cloud DNS providers, etcd,
// dnstap...), which triples the build time on two cores for nothing here.
//
// CoreDNS runs its plugins in the order of dnsserver.Directives, whatever the
// order in a Corefile, so the list below keeps the relative order of CoreDNS's
// own plugin.cfg for the plugins it names.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	dnsserver.Directives = []string{
		"bind",
		"ready",
		"health",
		"errors",
		"log",
		"loadbalance",
		"cache",
		"kubernetes",
	}
	coremain.Run()
}
