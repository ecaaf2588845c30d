package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// outputFlag adds -o to a command: table (the default, for people), json
// or yaml (for programs; docs/output.md describes each command's form).
func outputFlag(c *cobra.Command, out *string) {
	c.Flags().StringVarP(out, "output", "o", "table", "table, json or yaml")
}

// emit writes v as the format asks, or calls table for the table form.
func emit(w io.Writer, format string, v any, table func() error) error {
	switch format {
	case "", "table":
		return table()
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		return yaml.NewEncoder(w).Encode(v)
	}
	return fmt.Errorf("-o %q is not a format; use table, json or yaml", format)
}
