package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/spec"
)

// Shell completion of values (bothnia completion bash|zsh|fish prints the
// script): node and VM names come from the spec the command would read,
// the SPEC argument or --spec if given, else the running lab's.

// completionSpec finds the spec a partly typed command refers to.
func completionSpec(cmd *cobra.Command, args []string) *spec.Spec {
	path := ""
	if f := cmd.Flags().Lookup("spec"); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	} else if len(args) > 0 && strings.HasSuffix(args[0], ".yaml") {
		path = args[0]
	}
	name := defaultLab
	if f := cmd.Flags().Lookup("name"); f != nil {
		name = f.Value.String()
	}
	s, err := loadSpec(path, name)
	if err != nil {
		return nil
	}
	return s
}

func completeNames(names func(*spec.Spec) []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		s := completionSpec(cmd, args)
		if s == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range names(s) {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func vmNames(s *spec.Spec) []string {
	var out []string
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			out = append(out, vm.Name)
		}
	}
	return out
}

func networkNames(s *spec.Spec) []string {
	var out []string
	for _, n := range s.Networks {
		out = append(out, n.Name)
	}
	return out
}

func groupNames(s *spec.Spec) []string {
	var out []string
	for _, g := range s.SecurityGroups {
		out = append(out, g.Name)
	}
	return out
}

// endpointNames are what trace accepts besides VMs: the allowlist and the
// lab's blocked endpoints.
func traceTargets(s *spec.Spec) []string {
	out := vmNames(s)
	if s.Router != nil {
		for _, a := range s.Router.Allow {
			out = append(out, a.Name)
		}
	}
	for _, b := range s.Lab.Blocked {
		out = append(out, b.Name)
	}
	return out
}

// completeFlags registers value completion for the flags a command has.
func completeFlags(c *cobra.Command) {
	for flag, names := range map[string]func(*spec.Spec) []string{
		"node": (*spec.Spec).NodeNames, "network": networkNames, "security-group": groupNames,
	} {
		if c.Flags().Lookup(flag) != nil {
			_ = c.RegisterFlagCompletionFunc(flag, completeNames(names))
		}
	}
	for _, sub := range c.Commands() {
		completeFlags(sub)
	}
}

// completeArgs completes positional arguments: VM names for lab exec and
// lab vm del, VMs and endpoints for trace, YAML files for a SPEC.
func completeArgs(root *cobra.Command) {
	find := func(path ...string) *cobra.Command {
		c, _, err := root.Find(path)
		if err != nil || c == root {
			return nil
		}
		return c
	}
	set := func(c *cobra.Command, f cobra.CompletionFunc) {
		if c != nil && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = f
		}
	}
	first := func(f cobra.CompletionFunc) cobra.CompletionFunc {
		return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return f(cmd, args, toComplete)
		}
	}
	set(find("lab", "exec"), first(completeNames(vmNames)))
	set(find("lab", "vm", "del"), first(completeNames(vmNames)))
	traceArgs := completeNames(traceTargets)
	set(find("trace"), func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= 2 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return traceArgs(cmd, args, toComplete)
	})
	specFiles := func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
	}
	for _, path := range [][]string{{"validate"}, {"plan"}, {"apply"}, {"push"}, {"lab", "up"}, {"lab", "status"}, {"check"}} {
		set(find(path...), specFiles)
	}
}
