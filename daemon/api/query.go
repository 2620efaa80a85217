package api

import "net/url"

// Query encodes creq as the API's query parameters.
func (creq ClusterRequest) Query() url.Values {
	q := url.Values{}
	if f := creq.KubeconfigFile; f != "" {
		q.Set("kubeconfigFile", f)
	}
	for _, p := range creq.KubeconfigEnv {
		q.Add("kubeconfigEnv", p)
	}
	if creq.Context != "" {
		q.Set("context", creq.Context)
	}
	if creq.Namespace != "" {
		q.Set("namespace", creq.Namespace)
	}
	return q
}
