package node

// dnsServer is the pods' cluster DNS (not written yet: pods get no
// resolv.conf of their own).
type dnsServer struct{}

func startDNS(*Node) (*dnsServer, error) { return &dnsServer{}, nil }

func (*dnsServer) close() {}

// resolvConf is the resolv.conf of pods in namespace ns ("": the host's).
func (n *Node) resolvConf(string) string { return "" }
