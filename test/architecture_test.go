package test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The architecture rules a reviewer can count (README, "Contributing"):
// state lives in struct fields built by the assembly, not in init()
// registries or package-level tables. Where the code is not there yet the
// check is a ratchet: today's figure may fall, never rise.

// moduleGoFiles parses every non-test Go file of the module.
func moduleGoFiles(t *testing.T) map[string]*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && path != "..") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution|parser.ParseComments)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(strings.TrimPrefix(path, "../"))] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 100 {
		t.Fatalf("found only %d Go files: not walking the module", len(files))
	}
	return files
}

// sideTableType reports whether a package-level variable's type is a
// sync.Map or a map keyed by a pointer or an interface (an instance).
func sideTableType(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.SelectorExpr:
		if id, ok := x.X.(*ast.Ident); ok && id.Name == "sync" && x.Sel.Name == "Map" {
			return true
		}
	case *ast.MapType:
		switch x.Key.(type) {
		case *ast.StarExpr, *ast.InterfaceType:
			return true
		}
		if id, ok := x.Key.(*ast.Ident); ok && (id.Name == "any" || id.Name == "error") {
			return true
		}
	}
	return false
}

func TestArchitecture(t *testing.T) {
	files := moduleGoFiles(t)
	methods := map[string]int{} // package dir + type -> methods
	for path, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.Name == "init" {
					t.Errorf("%s: func init(): register in the assembly or the owner's constructor instead", path)
				}
				if d.Recv != nil && len(d.Recv.List) == 1 {
					typ := d.Recv.List[0].Type
					if s, ok := typ.(*ast.StarExpr); ok {
						typ = s.X
					}
					if ix, ok := typ.(*ast.IndexExpr); ok {
						typ = ix.X
					}
					if id, ok := typ.(*ast.Ident); ok {
						methods[filepath.Dir(path)+"."+id.Name]++
					}
				}
			case *ast.GenDecl:
				if d.Tok != token.VAR {
					continue
				}
				for _, spec := range d.Specs {
					vs := spec.(*ast.ValueSpec)
					typ := vs.Type
					if typ == nil && len(vs.Values) == 1 {
						if cl, ok := vs.Values[0].(*ast.CompositeLit); ok {
							typ = cl.Type
						}
					}
					if typ != nil && sideTableType(typ) {
						t.Errorf("%s: package-level %s is a table keyed by instances: make it a field of its owner", path, vs.Names[0].Name)
					}
				}
			}
		}
	}

	// No type over 60 methods: an API grows by handler groups.
	for typ, n := range methods {
		if n > 60 {
			t.Errorf("%s has %d methods (limit 60): split it into handler groups", typ, n)
		}
	}

	// The room server is the only writer of rooms: the storage functions
	// that change events or room state are called from roomserver alone
	// (storage itself and tests aside). Others ask the room server.
	roomWriters := []string{"InsertEvent", "InsertRoom", "UpdateRoomHead", "SetRoomLastPos", "PromoteOutlier", "RedactEvent",
		"InsertSnapshot", "SetCurrentState", "PurgeRoom", "PurgeRoomIndexes", "PurgeExpiredEvents", "PurgeEventsBefore"}
	for path, f := range files {
		if strings.HasPrefix(path, "roomserver/") || strings.HasPrefix(path, "storage/") || strings.HasPrefix(path, "test/") {
			continue
		}
		name := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"enclave/storage"` {
				name = "storage"
				if imp.Name != nil {
					name = imp.Name.Name
				}
			}
		}
		if name == "" {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == name && slices.Contains(roomWriters, sel.Sel.Name) {
					t.Errorf("%s: storage.%s writes rooms: go through a roomserver method (room lock, caches)", path, sel.Sel.Name)
				}
			}
			return true
		})
	}

	// Who imports clientapi (directly or not): the assembly, the binary and
	// these tests. Components share HTTP plumbing through internal/httpapi.
	allowed := []string{"enclave/internal/server", "enclave/cmd/enclave", "enclave/test", "enclave/clientapi"}
	// The components; the shared packages under internal/ import none of
	// them (directly or not), only the assembly (internal/server) does.
	components := []string{"clientapi", "federationapi", "roomserver", "syncapi", "auditapi", "mediaapi", "adminapi"}
	isComponent := func(pkg string) bool {
		for _, c := range components {
			if pkg == "enclave/"+c || strings.HasPrefix(pkg, "enclave/"+c+"/") {
				return true
			}
		}
		return false
	}
	out, err := exec.Command("go", "list", "-tags", "goolm", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "enclave/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen, internal := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		seen++
		if slices.Contains(fields[1:], "enclave/clientapi") && !slices.Contains(allowed, fields[0]) {
			t.Errorf("%s imports enclave/clientapi: only the assembly may", fields[0])
		}
		pkg := fields[0]
		if !strings.HasPrefix(pkg, "enclave/internal/") || pkg == "enclave/internal/server" || strings.HasPrefix(pkg, "enclave/internal/server/") {
			continue
		}
		internal++
		for _, dep := range fields[1:] {
			if isComponent(dep) {
				t.Errorf("%s imports component %s: shared packages take what they need as plain values or small interfaces", pkg, dep)
			}
		}
	}
	if internal < 5 {
		t.Fatalf("go list returned %d internal packages", internal)
	}
	if seen < 15 {
		t.Fatalf("go list returned %d packages", seen)
	}
}
