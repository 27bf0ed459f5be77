// Command tlogverify checks the audit log's checkpoints and proofs with Go's own transparency-log
// code (golang.org/x/mod/sumdb/note and tlog), independently of the Python that produced them.
//
// It reads one JSON document on stdin:
//
//	{"verifier_key": "<name>+<hash>+<key>",
//	 "checkpoint": "<signed note>", "old_checkpoint": "<signed note>",
//	 "inclusion": {"leaf_data": "<hex>", "leaf_index": 3, "tree_size": 8, "hashes": ["<base64>", ...]},
//	 "consistency": {"from": 5, "to": 8, "hashes": ["<base64>", ...]},
//	 "witness_keys": ["<name>+<hash>+<key of type 0x04>", ...]}
//
// Witness keys are optional: each must have cosigned the (new) checkpoint, a C2SP tlog-cosignature
// checked by github.com/transparency-dev/formats/note. It opens both checkpoints with the key, checks the inclusion proof against the checkpoint of its
// tree size and the consistency proof from the old checkpoint to the new, prints what it checked,
// and exits 1 at the first failure.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"time"

	cosig "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	VerifierKey   string `json:"verifier_key"`
	Checkpoint    string `json:"checkpoint"`
	OldCheckpoint string `json:"old_checkpoint"`
	Inclusion     struct {
		LeafData  string   `json:"leaf_data"`
		LeafIndex int64    `json:"leaf_index"`
		TreeSize  int64    `json:"tree_size"`
		Hashes    []string `json:"hashes"`
	} `json:"inclusion"`
	Consistency struct {
		From   int64    `json:"from"`
		To     int64    `json:"to"`
		Hashes []string `json:"hashes"`
	} `json:"consistency"`
	WitnessKeys []string `json:"witness_keys"`
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// open verifies the note's signature and parses the C2SP tlog-checkpoint body it carries.
func open(text string, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, fmt.Errorf("not a checkpoint: %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return checkpoint{}, fmt.Errorf("bad tree size %q", lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return checkpoint{}, fmt.Errorf("bad root hash %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], raw)
	return checkpoint{lines[0], size, root}, nil
}

func hashes(encoded []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(encoded))
	for i, e := range encoded {
		raw, err := base64.StdEncoding.DecodeString(e)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d is not a base64 SHA-256", i)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

// cosigned checks that every witness key has a verifying cosignature/v1 line in the note.
func cosigned(text string, log note.Verifier, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	verifiers := []note.Verifier{log}
	for _, k := range keys {
		v, err := cosig.NewVerifierForCosignatureV1(k)
		if err != nil {
			return fmt.Errorf("witness key %q: %w", k, err)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open([]byte(text), note.VerifierList(verifiers...))
	if err != nil {
		return err
	}
	for _, v := range verifiers[1:] {
		found := false
		for _, s := range n.Sigs {
			if s.Name == v.Name() && s.Hash == v.KeyHash() {
				t, err := cosig.CoSigV1Timestamp(s)
				if err != nil {
					return err
				}
				fmt.Printf("cosignature ok: %s at %s\n", v.Name(), t.UTC().Format(time.RFC3339))
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no cosignature by %s", v.Name())
		}
	}
	return nil
}

func run() error {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	verifier, err := note.NewVerifier(in.VerifierKey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	latest, err := open(in.Checkpoint, verifier)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	fmt.Printf("checkpoint ok: %s size %d\n", latest.origin, latest.size)
	if err := cosigned(in.Checkpoint, verifier, in.WitnessKeys); err != nil {
		return fmt.Errorf("cosignatures: %w", err)
	}
	old, err := open(in.OldCheckpoint, verifier)
	if err != nil {
		return fmt.Errorf("old checkpoint: %w", err)
	}
	fmt.Printf("old checkpoint ok: %s size %d\n", old.origin, old.size)

	inc := in.Inclusion
	if inc.TreeSize != latest.size && inc.TreeSize != old.size {
		return fmt.Errorf("inclusion proof is for size %d, no checkpoint has it", inc.TreeSize)
	}
	root := latest.root
	if inc.TreeSize == old.size {
		root = old.root
	}
	data, err := hex.DecodeString(inc.LeafData)
	if err != nil {
		return fmt.Errorf("leaf data: %w", err)
	}
	path, err := hashes(inc.Hashes)
	if err != nil {
		return err
	}
	if err := tlog.CheckRecord(tlog.RecordProof(path), inc.TreeSize, root, inc.LeafIndex, tlog.RecordHash(data)); err != nil {
		return fmt.Errorf("inclusion: %w", err)
	}
	fmt.Printf("inclusion ok: leaf %d in tree %d\n", inc.LeafIndex, inc.TreeSize)

	con := in.Consistency
	if con.From != old.size || con.To != latest.size {
		return fmt.Errorf("consistency proof %d→%d does not join the checkpoints %d→%d", con.From, con.To, old.size, latest.size)
	}
	proof, err := hashes(con.Hashes)
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(tlog.TreeProof(proof), latest.size, latest.root, old.size, old.root); err != nil {
		return fmt.Errorf("consistency: %w", err)
	}
	fmt.Printf("consistency ok: %d → %d\n", old.size, latest.size)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlogverify:", err)
		os.Exit(1)
	}
}
