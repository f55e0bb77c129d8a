<?php
// Runs a search and lists the results.
$q = trim((string) ($_GET['q'] ?? ''));
$results = [];
if ($q !== '') {
    $stmt = acme_db()->prepare('SELECT id, title, excerpt FROM pages WHERE title LIKE ? ORDER BY title LIMIT 50');
    $stmt->execute(['%' . $q . '%']);
    $results = $stmt->fetchAll(PDO::FETCH_ASSOC);
}
?>
<h1>Search results for &ldquo;<?php echo htmlspecialchars($q); ?>&rdquo;</h1>
<ol class="results">
<?php foreach ($results as $r): ?>
  <li><?php echo htmlspecialchars($r['title']); ?></li>
<?php endforeach; ?>
</ol>
