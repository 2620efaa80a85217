package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommandsInDocsParse: every `sbx …` command the admin-facing
// manifests quote exists, with the flags they give it. deploy/rbac.yaml
// once told admins about `sbx list -A`, which no sbx had.
func TestCommandsInDocsParse(t *testing.T) {
	quoted := regexp.MustCompile("`(sbx [^`]+)`")
	for _, file := range []string{"../../deploy/rbac.yaml"} {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		// A comment may wrap a quoted command over two lines.
		text := strings.Join(strings.Fields(strings.ReplaceAll(string(data), "#", " ")), " ")
		for _, m := range quoted.FindAllStringSubmatch(text, -1) {
			args := strings.Fields(m[1])[1:]
			root := newRootCmd(buildInfo{Version: "test"}, nil, &bytes.Buffer{}, &bytes.Buffer{})
			cmd, rest, err := root.Find(args)
			require.NoError(t, err, "%s: `%s`", file, m[1])
			require.NoError(t, cmd.ParseFlags(rest), "%s: `%s`", file, m[1])
		}
	}
}
