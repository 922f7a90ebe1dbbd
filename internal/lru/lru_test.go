package lru

import "testing"

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c := New[string, int](2)
	c.Put("a", 1)
	c.Put("b", 2)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("a = %v %v", v, ok)
	}
	c.Put("c", 3) // evicts b, the least recently used
	if _, ok := c.Get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	if v, ok := c.Get("c"); !ok || v != 3 {
		t.Fatalf("c = %v %v", v, ok)
	}
	c.Put("a", 10)
	if v, _ := c.Get("a"); v != 10 {
		t.Fatalf("a not updated: %v", v)
	}
	c.Remove("a")
	if _, ok := c.Get("a"); ok {
		t.Fatal("a should be removed")
	}
}

func TestRemoveIf(t *testing.T) {
	c := New[int, string](10)
	for i := range 6 {
		c.Put(i, "v")
	}
	c.RemoveIf(func(k int, _ string) bool { return k%2 == 0 })
	for i := range 6 {
		if _, ok := c.Get(i); ok != (i%2 == 1) {
			t.Errorf("key %d present=%v after RemoveIf(even)", i, ok)
		}
	}
}
