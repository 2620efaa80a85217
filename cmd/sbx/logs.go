package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/spf13/cobra"
)

func newLogsCmd(g *globalOptions) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs [-f]",
		Short: "Print the daemon's log",
		Example: `  sbx logs
  sbx logs -f          # keep printing new lines
  sbx logs --tail 50`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The log is text; refuse -o json rather than ignore it.
			if _, err := g.outputFormat("text"); err != nil {
				return err
			}
			if tail < 0 {
				return userError(fmt.Errorf("--tail %d is negative", tail), "pass the number of last lines to print, or 0 (the default) for all")
			}
			ctx := cmd.Context()
			path := daemonPaths().Log()
			// A running daemon knows best where it writes.
			c := &client.Client{Socket: daemonPaths().Socket()}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if p, err := c.LogPath(pctx); err == nil && p != "" {
				path = p
			}
			cancel()
			c.Close()
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) {
				return userError(fmt.Errorf("no daemon log at %s yet", path), "the daemon writes it once started: `sbx daemon` or any connect")
			}
			if err != nil {
				return err
			}
			if err := printLog(f, tail, g.stdout); err != nil || !follow {
				_ = f.Close()
				return err
			}
			return followFile(ctx, f, path, g.stdout, followPoll)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing lines as the daemon writes them")
	cmd.Flags().IntVar(&tail, "tail", 0, "print only the last N lines first (0: all)")
	return cmd
}

// followPoll is how often `sbx logs -f` looks for new lines.
const followPoll = 200 * time.Millisecond

// printLog prints f from the start of its last tail lines (all with 0).
func printLog(f *os.File, tail int, w io.Writer) error {
	if tail > 0 {
		if err := seekTail(f, tail); err != nil {
			return err
		}
	}
	_, err := io.Copy(w, f)
	return err
}

// followFile prints what is appended to f until ctx ends, looking every
// poll. When the log is rotated (a new file at path), it prints what is
// left of the old file, closes it and continues with the new one, so that
// a long follow holds one file open and loses no line. It closes the file
// it holds when it returns.
func followFile(ctx context.Context, f *os.File, path string, w io.Writer, poll time.Duration) error {
	defer func() { _ = f.Close() }()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err1 := f.Stat()
		now, err2 := os.Stat(path)
		rotated := err1 == nil && err2 == nil && !os.SameFile(cur, now)
		// Read after the check: a line written to the old file before
		// the rotation is read here, before the old file is left.
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		if !rotated {
			continue
		}
		nf, err := os.Open(path)
		if err != nil {
			continue // between rename and create; next time
		}
		_ = f.Close()
		f = nf
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
	}
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	lines := 0
	pos := size
	for pos > 0 {
		step := int64(chunk)
		if pos < step {
			step = pos
		}
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := int(step) - 1; i >= 0; i-- {
			if buf[i] == '\n' {
				if int64(i)+pos == size-1 {
					continue // the file's final newline
				}
				lines++
				if lines == n {
					_, err := f.Seek(pos+int64(i)+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}
